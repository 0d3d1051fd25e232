"""Weight sharing in the class capsules (FasTrCaps): parameters, speed and accuracy, same run.

    python -m benchmarks.weight_sharing [--epochs 15] [--output runs/bench_weight_sharing]
        [--skip-training]

1. Parameters of CapsNet and small_capsnet with and without sharing (the paper's shared CapsNet
   is `weight_sharing=32, sharing_order="type_major", decoder="small"`: 6,719,920 in the paper).
2. Forward + backward time of the class-capsule layer, unshared against each sharing, with the
   shared kernel applied by reshape (kcaps' default where the sharing allows it) and by gather.
3. small_capsnet trained on the real-digits split (first 8,000 MNIST test images train, last
   2,000 evaluate) for each sharing, with the baseline policy (Adam 1e-3, batch 128), plus fewer
   routing iterations and WarmAdaBatch + sharing: accuracy, parameters, seconds per epoch,
   FasTrCaps' training time (through `kcaps sweep`'s `run_sweep`; resumable).
"""
import argparse
import os
import sys


import kcaps  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarks.common import median_seconds, print_table  # noqa: E402
from kcaps_training import sweep  # noqa: E402
from kcaps_training import train as recipe  # noqa: E402

PAPER_PARAMETERS = {"capsnet": 8_227_248, "shared (paper)": 6_719_920}  # incl. 11,520 c_ij


def parameter_rows():
    rows = []
    for model, options in [
        ("capsnet", {}),
        ("capsnet", {"decoder": "small"}),
        ("capsnet", {"weight_sharing": 32, "sharing_order": "type_major", "decoder": "small"}),
        ("capsnet", {"weight_sharing": "type"}),
        ("capsnet", {"weight_sharing": "position"}),
        ("small_capsnet", {}),
        ("small_capsnet", {"weight_sharing": "type"}),
        ("small_capsnet", {"weight_sharing": "position"}),
    ]:
        net = kcaps.models.get(model)(**options)
        layer = net.get_layer("class_capsules")
        rows.append({"model": model, "options": options or "unshared",
                     "class-capsule matrices": layer.kernel.shape[0],
                     "class-capsule weights": int(np.prod(layer.kernel.shape)),
                     "parameters": net.count_params()})
    return rows


def _step(layer, u):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(kcaps.ops.safe_norm(layer(u)))
        return tf.convert_to_tensor(tape.gradient(loss, layer.kernel))

    step().numpy()  # trace
    return step


def layer_rows(batch, repeats):
    """Each sharing by reshape (where its layout allows) and by gather, against unshared.

    The variants are timed in interleaved rounds (median per variant), so that a drift of the
    machine's load affects them alike.
    """
    rows = []
    rng = np.random.default_rng(0)
    for num_in, types, dim_out in [(1152, 32, 16), (128, 8, 8)]:
        u = tf.constant(kcaps.ops.squash(rng.normal(size=(batch, num_in, 8)).astype(np.float32)))
        variants = []
        for sharing, order in [(None, "position_major"), ("type", "position_major"),
                               ("position", "position_major"), (types, "type_major")]:
            methods = ["-"] if sharing is None else ["reshape", "gather"]
            for method in methods:
                layer = kcaps.layers.CapsuleDense(10, dim_out, weight_sharing=sharing,
                                                  capsule_types=types, sharing_order=order)
                layer.build(u.shape)
                if method == "reshape" and layer.projection.layout is None:
                    continue  # no reshape form (the paper's tiling): kcaps gathers
                if method == "gather":
                    layer.projection.layout = None  # force the gather of the shared kernel
                name = "unshared" if sharing is None else f"{sharing} ({order})"
                variants.append(({"layer": f"{num_in}x8 -> 10x{dim_out}", "sharing": name,
                                  "method": method, "matrices": layer.kernel.shape[0]},
                                 _step(layer, u), []))
        for _ in range(repeats):
            for _, step, times in variants:
                times.append(median_seconds(lambda: step().numpy(), repeats=1, warmup=0))
        base_ms = 1e3 * np.median(variants[0][2])
        for row, _, times in variants:
            ms = 1e3 * float(np.median(times))
            rows.append({**row, "ms fwd+bwd": ms, "vs unshared": ms / base_ms})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--output", default="runs/bench_weight_sharing")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps-per-execution", type=int, default=50)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)

    print("== parameters (paper: CapsNet 8,227,248; shared + small decoder 6,719,920, both "
          "counting the 11,520 coupling coefficients, and a 160-value bias kcaps does not use)")
    print_table(parameter_rows(), ["model", "options", "class-capsule matrices",
                                   "class-capsule weights", "parameters"])
    print(f"\n== class-capsule layer, batch {args.batch}, 3 routing iterations, forward+backward")
    print_table(layer_rows(args.batch, args.repeats),
                ["layer", "sharing", "method", "matrices", "ms fwd+bwd", "vs unshared"])
    if args.skip_training:
        return 0

    base = recipe.TrainConfig(
        model="small_capsnet", dataset="real_digits", epochs=args.epochs, batch_size=128,
        learning_rate=1e-3, lr_policy="fixed", steps_per_execution=args.steps_per_execution,
        verbose=2)
    grids = [{"weight_sharing": [None, "type", "position"]},
             {"weight_sharing": [None], "routing_iterations": [1, 2]},
             {"weight_sharing": ["type"], "lr_policy": ["warm_adabatch"],
              "batch_policy": ["adabatch"], "warm_epochs": [1]}]
    rows = sweep.run_sweep(base, grids, args.output)
    print(f"\n== small_capsnet on real digits, {args.epochs} epochs (paper, CapsNet on MNIST: "
          f"unshared 99.37% in 8,700 s; shared 99.10% in 8,100 s; WarmAdaBatch + shared 99.38% "
          f"in 7,200 s)")
    unshared = rows[0]
    table = []
    for row in rows:
        table.append({
            "point": row["point"], "parameters": row["parameters"],
            "best acc %": 100 * row["best_accuracy"], "final acc %": 100 * row["final_accuracy"],
            "s/epoch": row["mean_epoch_seconds"],
            "s/epoch vs unshared": row["mean_epoch_seconds"] / unshared["mean_epoch_seconds"],
            "FasTrCaps s": row["fastrcaps_seconds"], "total s": row["total_seconds"]})
    print_table(table, list(table[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
