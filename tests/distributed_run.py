"""Training runs under tf.distribute, started as subprocesses by tests/test_distribute.py.

    python tests/distributed_run.py compare OUT.json       # default vs mirrored on 2 logical CPUs
    python tests/distributed_run.py worker OUT.npz OUTDIR   # one multi-worker worker (TF_CONFIG set)
    python tests/distributed_run.py callbacks OUT.json      # kcaps callbacks under mirrored, 2 CPUs
    python tests/distributed_run.py resume OUT.json first|second  # crash, then resume, mirrored
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import distribute, datasets  # noqa: E402
from training import train as recipe  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

import kcaps  # noqa: E402
from crash import Interrupt, StopAfter  # noqa: E402


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


def callbacks(result_path):
    """tfmot pruning, the capsule activity monitor and iterative channel pruning."""
    distribute.split_cpu(2)
    strategy = distribute.make_strategy("mirrored")
    sparsity = tfmot.sparsity.keras
    data = small_data()
    x, y = data.x_train[:256], data.y_train[:256]
    result = {"replicas": strategy.num_replicas_in_sync}

    with strategy.scope():
        pruned = sparsity.prune_low_magnitude(
            kcaps.models.small_capsnet(data.input_shape, 10),
            pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
        pruned.compile(tf.keras.optimizers.Adam(1e-3))
    monitor = kcaps.activity.CapsuleActivityMonitor(x[:64])
    history = pruned.fit(x, y, batch_size=64, epochs=2, verbose=0,
                         callbacks=[sparsity.UpdatePruningStep(), monitor]).history
    stripped = sparsity.strip_pruning(pruned)
    result["sparsity"] = {row["layer"]: row["sparsity"]
                          for row in kcaps.pruning.sparsity_report(stripped)}
    result["activity_keys"] = sorted(k for k in history if k.endswith("_inactive_fraction"))

    with strategy.scope():
        model = kcaps.models.small_capsnet(data.input_shape, 10)
        model.compile(tf.keras.optimizers.Adam(1e-3))
    schedule = kcaps.pruning.IterativeChannelPruning(0.5, step=0.25, every=1)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[schedule])
    result["units_before"] = kcaps.pruning.prunable_units(model)
    result["units_after"] = kcaps.pruning.prunable_units(schedule.shrink())

    with open(result_path, "w") as f:
        json.dump(result, f)


def resume(result_path, phase):
    """`first`: crash after epoch 1; `second`: a new process resumes (as after a real crash)."""
    distribute.split_cpu(2)
    out = os.path.join(os.path.dirname(result_path), "resume")
    config = recipe.TrainConfig(epochs=3, batch_size=64, max_shift=0, output_dir=out,
                                strategy="mirrored", lr_policy="warm_restarts", verbose=0)
    if phase == "first":
        try:
            recipe.train(config, callbacks=[StopAfter(0)], data=small_data())
        except Interrupt:
            return
        raise AssertionError("the interrupting callback did not stop training")
    resumed = recipe.train(config, data=small_data())
    with open(os.path.join(out, "log.csv")) as f:
        csv_epochs = [int(line.split(",")[0]) for line in f.readlines()[1:]]
    with open(result_path, "w") as f:
        json.dump({"epochs": len(resumed.history["loss"]), "lr": resumed.history["lr"],
                   "csv_epochs": csv_epochs, "replicas": resumed.metrics["replicas"]}, f)


if __name__ == "__main__":
    {"compare": compare, "worker": worker, "callbacks": callbacks, "resume": resume}[sys.argv[1]](*sys.argv[2:])
