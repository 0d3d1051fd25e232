"""The training recipe: a dataset and a kcaps model through one plain `model.fit`.

`fit` is the recipe every command trains with (`kcaps train`, `sweep`, `quickstart`, `heads`,
`prune`): Adam under the config's learning-rate policy, batches by its batch policy, `EpochTimer`,
and with an output directory `log.csv` (Keras CSVLogger), `tensorboard/` and, given a backup
directory, `BackupAndRestore`. `evaluate` is its one accuracy: the capsule lengths of
`kcaps.models.classifier(model)` scored by a `kcaps.metrics` metric (top-1 by default,
both-digits-correct for MultiMNIST).

`train(config)` is a whole run. It writes into `config.output_dir`:
`config.json`, `log.csv`, `tensorboard/`, `backup/` (BackupAndRestore, emptied when the run
completes), `model.keras`, `training_curves.png` and, last, `metrics.json`. Then:

- the same command after an interruption resumes from the last finished epoch (`log.csv` goes on
  where it stopped);
- the same command after the run finished trains nothing: it returns the finished run
  (`TrainResult.already_finished`); `overwrite=True` (`--overwrite`) deletes the run's files and
  trains again from epoch 1;
- another config into a directory that holds a run (finished or not) is refused, naming the
  fields that differ, unless `overwrite=True`.

`log.csv`, the curves PNG and `metrics.json`'s `history` always hold the whole run, one row per
epoch, however many times it was resumed.
"""
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import time

import numpy as np
import tensorflow as tf

import kcaps
from kcaps_training import datasets, distribute, fast_training, plots
from kcaps_training.config import TrainConfig  # noqa: F401  (the recipe's config, re-exported)

# Fields that may differ between a run and its rerun (how it prints, where it is looked for).
_RERUN_FIELDS = ("output_dir", "verbose")
# What `train` writes into an output directory (what --overwrite deletes; nothing else).
RUN_FILES = ("config.json", "log.csv", "model.keras", "training_curves.png", "metrics.json")


@dataclasses.dataclass
class TrainResult:
    model: tf.keras.Model
    history: dict  # the epochs trained by this call (empty for an already finished run)
    metrics: dict  # metrics.json
    already_finished: bool = False


def build_model(config, data):
    return kcaps.models.get(config.model)(
        input_shape=data.input_shape, num_classes=data.num_classes,
        routing_iterations=config.routing_iterations, **fast_training.model_options(config))


def fit(model, data, config, validation_data=None, callbacks=(), output_dir=None,
        backup_dir=None, metric=None):
    """Compile `model` and train it with the recipe of `config`; return the History dict.

    Args:
      model: a Keras model (compiled here, under the strategy it was built in).
      data: a `kcaps_training.datasets.Dataset` (its training split) or a `tf.data.Dataset` of
        single `(image, label)` examples (`fast_training.examples`).
      config: a `TrainConfig`: epochs, batch and learning-rate policies, seed of the shuffling.
      validation_data: passed to `model.fit`.
      callbacks: more Keras callbacks, after the recipe's own.
      output_dir: where `log.csv` and `tensorboard/` go (none if None).
      backup_dir: `BackupAndRestore` directory: an interrupted fit resumes from it, and
        `log.csv` goes on; without a backup to resume from, `log.csv` starts afresh.
      metric: the accuracy metric class (default: the model's own, top-1 of the lengths);
        `kcaps.metrics.MultiDigitAccuracy` for MultiMNIST.
    """
    plan = fast_training.plan(config, data)
    with model.distribute_strategy.scope():
        model.compile(tf.keras.optimizers.Adam(plan.learning_rate),
                      metrics=None if metric is None else {"lengths": [metric(name="accuracy")]},
                      steps_per_execution=config.steps_per_execution,
                      jit_compile=config.jit_compile)
    recipe = [kcaps.callbacks.EpochTimer(), *plan.schedule_callbacks]
    resuming = False
    if backup_dir is not None:
        resuming = any(pathlib.Path(backup_dir).rglob("checkpoint"))
        recipe.append(tf.keras.callbacks.BackupAndRestore(backup_dir))
    recipe += plan.data_callbacks
    if output_dir is not None:
        log = os.path.join(output_dir, "log.csv")
        if not resuming and os.path.exists(log):
            os.remove(log)  # a fit from epoch 1 starts its log afresh
        recipe += [tf.keras.callbacks.CSVLogger(log, append=True),  # across fit_adaptive's fits
                   tf.keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"))]
    return plan.fit(  # one model.fit (adabatch under a strategy: one per batch size)
        model, validation_data=validation_data, epochs=config.epochs, verbose=config.verbose,
        callbacks=[*recipe, *callbacks]).history


def evaluate(model, x, y, metric=None, batch_size=256):
    """Test accuracy of `model` on images `x` and labels `y`, and the seconds inference took.

    The capsule lengths of `kcaps.models.classifier(model)` scored by `metric` (a `kcaps.metrics`
    class; default `CapsuleAccuracy`: top-1; `MultiDigitAccuracy`: both digits of multi-hot
    labels). Returns `{"accuracy": float, "evaluate_seconds": float}`.
    """
    start = time.perf_counter()
    scores = kcaps.models.classifier(model).predict(x, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    score = (metric or kcaps.metrics.CapsuleAccuracy)(dtype="float64")  # exact counts
    score.update_state(y, scores)
    return {"accuracy": float(score.result()), "evaluate_seconds": seconds}


def train(config, callbacks=(), data=None, overwrite=False):
    """Train `config.model` on `config.dataset`; return the model, its history and its metrics.

    See the module doc for reruns into the same `config.output_dir`. Under a multi-worker
    strategy every worker runs this; the chief writes into `config.output_dir`, the other workers
    into temporary directories.
    """
    if not overwrite:
        finished = _previous_run(config)
        if finished is not None:
            return finished
    if config.precision != "float32":
        distribute.set_precision(config.precision)
    strategy = distribute.make_strategy(config.strategy)
    config.check_replicas(strategy.num_replicas_in_sync)
    out = distribute.worker_output_dir(config.output_dir, strategy)
    backup = os.path.join(config.output_dir, "backup")  # the same path on every worker: Keras
    if overwrite:                                       # keeps non-chief copies apart itself
        _delete_run(out, backup if out == config.output_dir else None)
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    tf.keras.utils.set_random_seed(config.seed)
    data = data or datasets.load(config.dataset, config.data_dir)
    with strategy.scope():
        model = build_model(config, data)
    history = fit(model, data, config, callbacks=callbacks, output_dir=out, backup_dir=backup,
                  validation_data=datasets.pipeline(data.x_test, data.y_test, config.batch_size))

    evaluation = evaluate(model, data.x_test, data.y_test)
    model.save(os.path.join(out, "model.keras"))
    run = read_log(os.path.join(out, "log.csv"))  # every epoch of the run, resumed or not
    epoch_seconds = run.get("epoch_seconds", [])
    metrics = {
        "model": config.model,
        "dataset": data.describe(),
        "parameters": int(model.count_params()),
        "epochs_run": len(history.get("loss", [])),  # by this call (a resumed run: the rest)
        "epochs": len(run.get("epoch", [])),
        "test_accuracy": evaluation["accuracy"],
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "train_seconds": float(np.sum(epoch_seconds)) if epoch_seconds else None,
        "test_images_per_second": len(data.x_test) / evaluation["evaluate_seconds"],
        "replicas": strategy.num_replicas_in_sync,
        "precision": tf.keras.mixed_precision.global_policy().name,
        "history": {k: v for k, v in run.items() if k != "epoch"},
    }
    plots.plot_history(metrics["history"], os.path.join(out, "training_curves.png"),
                       title=f"{config.model} on {config.dataset}")
    _write_json(os.path.join(out, "metrics.json"), metrics)  # last: the run is finished
    return TrainResult(model, history, metrics)


def read_log(path):
    """`log.csv` as `{column: [value per epoch]}`, one row per epoch (a repeated epoch: the last)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    columns = [c for c in next(iter(rows.values()), {})]
    return {c: [int(e) if c == "epoch" else _number(rows[e][c]) for e in sorted(rows)]
            for c in columns}


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):  # CSVLogger's "NA" for a value an epoch did not log
        return float("nan")


def _previous_run(config):
    """The finished run in `config.output_dir` (None if there is none to reuse).

    Raises ValueError if the directory holds a run (finished or not) of another config.
    """
    path = os.path.join(config.output_dir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        previous = json.load(f)
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    changed = {k: (previous.get(k), v) for k, v in current.items()
               if k not in _RERUN_FIELDS and previous.get(k) != v}
    if changed:
        raise ValueError(
            f"{config.output_dir} holds a run of another config ({changed}: old, new); use "
            f"--overwrite (overwrite=True) to train it again or another --output")
    metrics_path = os.path.join(config.output_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        return None  # interrupted: BackupAndRestore resumes it
    with open(metrics_path) as f:
        metrics = json.load(f)
    model = tf.keras.models.load_model(os.path.join(config.output_dir, "model.keras"))
    return TrainResult(model, {}, metrics, already_finished=True)


def _delete_run(out, backup):
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    for path in [os.path.join(out, "tensorboard"), backup]:
        if path is not None and os.path.isdir(path):
            shutil.rmtree(path)


def _write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
