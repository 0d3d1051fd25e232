"""Training runs under tf.distribute, started as subprocesses by tests/test_distribute.py.

    python tests/distributed_run.py compare OUT.json       # default vs mirrored on 2 logical CPUs
    python tests/distributed_run.py worker OUT.npz OUTDIR   # one multi-worker worker (TF_CONFIG set)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import distribute, datasets  # noqa: E402
from training import train as recipe  # noqa: E402

import numpy as np  # noqa: E402


def small_data():
    full = datasets.load("digits")
    return datasets.Dataset("digits", full.x_train[:512], full.y_train[:512], full.x_test[:128],
                            full.y_test[:128], 10)


def config(out, strategy, epochs=3):
    # no augmentation: identical batches in both runs; shuffling is seeded
    return recipe.TrainConfig(epochs=epochs, batch_size=64, max_shift=0, output_dir=out,
                              strategy=strategy, verbose=0)


def compare(result_path):
    distribute.split_cpu(2)
    data = small_data()
    base = os.path.dirname(result_path)
    runs = {name: recipe.train(config(os.path.join(base, name), name), data=data)
            for name in ("default", "mirrored")}
    with open(result_path, "w") as f:
        json.dump({name: {"loss": run.history["loss"], "replicas": run.metrics["replicas"]}
                   for name, run in runs.items()}, f)


def worker(weights_path, output_dir):
    distribute.make_strategy("multiworker")  # before any TensorFlow op, as TensorFlow requires
    result = recipe.train(config(output_dir, "multiworker", epochs=2), data=small_data())
    np.savez(weights_path, *result.model.get_weights(), replicas=result.metrics["replicas"])


if __name__ == "__main__":
    {"compare": compare, "worker": worker}[sys.argv[1]](*sys.argv[2:])
