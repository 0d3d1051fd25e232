"""Training runs under tf.distribute, started as subprocesses by tests/test_distribute.py.

    python tests/distributed_run.py compare OUT.json       # default vs mirrored on 2 logical CPUs
    python tests/distributed_run.py adabatch OUT.json      # WarmAdaBatch, default vs mirrored
    python tests/distributed_run.py worker OUT.npz OUTDIR   # one multi-worker worker (TF_CONFIG set)
    python tests/distributed_run.py callbacks OUT.json      # kcaps callbacks under mirrored, 2 CPUs
    python tests/distributed_run.py resume OUT.json first|second  # crash, then resume, mirrored
"""
import dataclasses
import json
import os
import sys


from kcaps_training import distribute, datasets  # noqa: E402
from kcaps_training import train as recipe  # noqa: E402

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


def warm_adabatch(out, strategy, epochs=3, warm_epochs=2):
    """WarmAdaBatch: batch 32 for `warm_epochs` epochs, then 128 (16 then 4 steps of 512)."""
    return recipe.TrainConfig(epochs=epochs, max_shift=0, output_dir=out, strategy=strategy,
                              verbose=0, lr_policy="warm_adabatch", batch_policy="adabatch",
                              warm_epochs=warm_epochs, warm_batch_size=32, adabatch_size=128)


class StepCounter(tf.keras.callbacks.Callback):
    """The optimizer's step count at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_epoch_end(self, epoch, logs=None):
        self.steps.append(int(self.model.optimizer.iterations.numpy()))


class ExtraIteratorAt(tf.keras.callbacks.Callback):
    """Opens one unused iterator over `data` at the end of `epoch`, as the second `model.fit` of
    `fit_adaptive` does under a strategy (Keras' fit opens one before its first epoch's), so a
    one-device run draws the same shuffle permutations as the two-phase strategy run."""

    def __init__(self, data, epoch):
        super().__init__()
        self.data, self.epoch = data, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            iter(self.data)


def adaptive_fit(strategy, data, one_device_reference=False):
    """kcaps-level WarmAdaBatch fit: 2 epochs at batch 32, 1 at 128, shuffled, no augmentation."""
    tf.keras.utils.set_random_seed(0)
    lr, batches = kcaps.policies.warm_adabatch(len(data.x_train), epochs=3, warm_epochs=2,
                                               warm_batch_size=32, batch_size=128)
    train = kcaps.adaptive_batch.AdaptiveBatchDataset(
        datasets.examples(data.x_train, data.y_train, shuffle=True), 32)
    with strategy.scope():
        model = kcaps.models.small_capsnet(data.input_shape, 10)
        model.compile(tf.keras.optimizers.Adam(lr))
    counter = StepCounter()
    callbacks = [kcaps.adaptive_batch.AdaptiveBatchSize(batches, train), counter]
    if one_device_reference:
        callbacks.append(ExtraIteratorAt(train, epoch=1))
    history = kcaps.adaptive_batch.fit_adaptive(model, train, 3, callbacks, verbose=0).history
    return {"loss": history["loss"], "batch_size": history["batch_size"], "steps": counter.steps,
            "replicas": strategy.num_replicas_in_sync}


def adabatch(result_path):
    distribute.split_cpu(2)
    data = small_data()
    result = {"default": adaptive_fit(distribute.make_strategy("default"), data, True),
              "mirrored": adaptive_fit(distribute.make_strategy("mirrored"), data)}
    base = os.path.dirname(result_path)  # the paper's warm batch 1 on 2 replicas
    too_small = dataclasses.replace(warm_adabatch(os.path.join(base, "small"), "mirrored"),
                                    warm_batch_size=1)
    try:
        recipe.train(too_small, data=data)
    except ValueError as error:
        result["error"] = str(error)
        result["started"] = os.path.exists(os.path.join(base, "small", "config.json"))
    with open(result_path, "w") as f:
        json.dump(result, f)


def worker(weights_path, output_dir):
    distribute.make_strategy("multiworker")  # before any TensorFlow op, as TensorFlow requires
    counter = StepCounter()
    result = recipe.train(warm_adabatch(output_dir, "multiworker", epochs=2, warm_epochs=1),
                          [counter], data=small_data())
    np.savez(weights_path, *result.model.get_weights(), replicas=result.metrics["replicas"],
             batch_size=result.history["batch_size"], steps=counter.steps)


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
    """`first`: crash after epoch 2, the first of batch 128 (the backup must outlive the batch-32
    phase's fit); `second`: a new process resumes (as after a real crash)."""
    distribute.split_cpu(2)
    out = os.path.join(os.path.dirname(result_path), "resume")
    config = warm_adabatch(out, "mirrored", epochs=4, warm_epochs=2)
    if phase == "first":
        try:
            recipe.train(config, callbacks=[StopAfter(2)], data=small_data())
        except Interrupt:
            return
        raise AssertionError("the interrupting callback did not stop training")
    counter = StepCounter()
    resumed = recipe.train(config, [counter], data=small_data())
    with open(os.path.join(out, "log.csv")) as f:
        rows = [line.strip().split(",") for line in f.readlines()]
    column = {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}
    with open(result_path, "w") as f:
        json.dump({"epochs": len(resumed.history["loss"]), "lr": resumed.history["lr"],
                   "batch_size": resumed.history["batch_size"], "steps": counter.steps,
                   "csv_epochs": [int(e) for e in column["epoch"]],
                   "csv_batch_size": [int(float(b)) for b in column["batch_size"]],
                   "backup_left": os.path.exists(os.path.join(out, "backup", "chief")),
                   "replicas": resumed.metrics["replicas"]}, f)


if __name__ == "__main__":
    {"compare": compare, "adabatch": adabatch, "worker": worker, "callbacks": callbacks,
     "resume": resume}[sys.argv[1]](*sys.argv[2:])
