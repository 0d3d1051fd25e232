"""Training throughput (images/s) for 1 and 2 replicas, and float32 vs mixed precision.

    python -m benchmarks.scaling [--models small_capsnet capsnet] [--steps 30] [--batch 64]

Without GPUs the "replicas" are logical CPU devices that share this machine's cores, so this
measures the overhead of tf.distribute's mirroring more than a speed-up; on a GPU machine run
it as is and MirroredStrategy uses every GPU (`--precision auto` picks mixed_float16 there).
Each figure is the mean of steps after one warm-up epoch; everything is measured in one run.
"""
import argparse
import os
import sys
import time


from kcaps_training import distribute  # noqa: E402  (imports kcaps: Keras 2 first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kcaps  # noqa: E402
from benchmarks.common import print_table  # noqa: E402


def images_per_second(model_name, strategy, precision, steps, batch):
    tf.keras.mixed_precision.set_global_policy(precision)
    try:
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(steps * batch, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, steps * batch)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
        with strategy.scope():
            model = kcaps.models.get(model_name)()
            model.compile(tf.keras.optimizers.Adam(1e-3))
        model.fit(data, epochs=1, verbose=0)  # warm-up: tracing and first allocations
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        return steps * batch / (time.perf_counter() - start)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["small_capsnet", "capsnet"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed"],
                        help="float32 and/or mixed (float16 on GPU, bfloat16 on CPU)")
    args = parser.parse_args(argv)

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        distribute.split_cpu(2)
    mixed = "mixed_float16" if gpus else "mixed_bfloat16"
    strategies = {"1 replica": tf.distribute.get_strategy(),
                  "2 replicas": distribute.make_strategy("mirrored")}
    rows = []
    for model_name in args.models:
        base = None
        for label, strategy in strategies.items():
            for precision in [mixed if p == "mixed" else p for p in args.precisions]:
                ips = images_per_second(model_name, strategy, precision, args.steps, args.batch)
                base = base or ips
                rows.append({"model": model_name, "replicas": label, "precision": precision,
                             "images/s": ips, "vs 1 replica float32": ips / base})
                print(f"  {model_name:14s} {label:10s} {precision:15s} {ips:8.1f} images/s",
                      flush=True)
    devices = f"{len(gpus)} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores) split in 2 logical devices"
    print(f"training throughput, global batch {args.batch}, {args.steps} steps, on {devices}")
    print_table(rows, ["model", "replicas", "precision", "images/s", "vs 1 replica float32"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
