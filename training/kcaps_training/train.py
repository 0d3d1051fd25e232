"""The training recipe: a dataset and a kcaps model through one plain `model.fit`.

A run writes into its output directory:
`config.json`, `log.csv` (Keras CSVLogger), `tensorboard/`, `backup/` (BackupAndRestore, removed
when the run completes), `model.keras`, `metrics.json` and `training_curves.png`.
Running the same command again after an interruption resumes from the last finished epoch.
"""
import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

import kcaps
from kcaps_training import datasets, distribute, fast_training, plots


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run depends on (written to `config.json`)."""

    model: str = "small_capsnet"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_decay: float = 0.9  # per epoch, as in the CapsNet-Keras reference
    max_shift: int = 2  # random translations, as Sabour et al. do on MNIST
    routing_iterations: int = 3
    output_dir: str = "runs/latest"
    seed: int = 0
    verbose: int = 1
    strategy: str = "default"  # default | mirrored | multiworker (kcaps_training.distribute)
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16 | auto
    # Fast training (FasTrCaps, see `kcaps_training.fast_training`); these defaults keep the recipe above.
    lr_policy: str = "epoch_decay"  # or fixed, exp_decay, one_cycle, warm_restarts, warm_adabatch
    batch_policy: str = "fixed"  # or adabatch: warm_batch_size for warm_epochs, then adabatch_size
    warm_epochs: int = 3
    warm_batch_size: int = 1
    adabatch_size: int = 16
    decay_steps: int | None = None  # exp_decay; None: a tenfold decay over the run
    weight_sharing: int | str | None = None  # class capsules: None, "type", "position" or K
    sharing_order: str = "position_major"  # how an int K counts capsules (type_major: the paper)
    decoder: bool | str | None = None  # None: the model's default; False, True or "small"
    squash: str = "squash"  # or "approx"
    steps_per_execution: int = 1
    jit_compile: bool = False  # XLA for the train step; off: it slows capsnet's convs on CPU (issue 19)

    def __post_init__(self):
        for field in ("epochs", "batch_size", "routing_iterations"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: `{field}` must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig: `learning_rate` must be > 0, got {self.learning_rate!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"TrainConfig: `lr_decay` must be in (0, 1], got {self.lr_decay!r}")
        if self.max_shift < 0:
            raise ValueError(f"TrainConfig: `max_shift` must be >= 0, got {self.max_shift!r}")
        kcaps.models.get(self.model)  # unknown names fail here, before any data is loaded
        distribute.check_strategy_name(self.strategy)
        if self.precision not in distribute.PRECISIONS:
            raise ValueError(f"TrainConfig: unknown precision {self.precision!r}; valid: "
                             f"{', '.join(distribute.PRECISIONS)}")
        if self.strategy == "multiworker":
            distribute.parse_tf_config()
        if self.dataset not in datasets.NAMES:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(datasets.NAMES)}")
        fast_training.check(self)


@dataclasses.dataclass
class TrainResult:
    model: tf.keras.Model
    history: dict
    metrics: dict


def build_model(config, data):
    return kcaps.models.get(config.model)(
        input_shape=data.input_shape, num_classes=data.num_classes,
        routing_iterations=config.routing_iterations, **fast_training.model_options(config))


def train(config, callbacks=(), data=None):
    """Train `config.model` on `config.dataset`; return the model, its history and its metrics.

    Under a multi-worker strategy every worker runs this; the chief writes into
    `config.output_dir`, the other workers into temporary directories.
    """
    if config.precision != "float32":
        distribute.set_precision(config.precision)
    strategy = distribute.make_strategy(config.strategy)
    fast_training.check_replicas(config, strategy.num_replicas_in_sync)
    out = distribute.worker_output_dir(config.output_dir, strategy)
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
    tf.keras.utils.set_random_seed(config.seed)
    data = data or datasets.load(config.dataset, config.data_dir)
    plan = fast_training.plan(config, data)  # the recipe's own unless a policy is chosen
    with strategy.scope():
        model = build_model(config, data)
        model.compile(tf.keras.optimizers.Adam(plan.learning_rate),
                      steps_per_execution=config.steps_per_execution,
                      jit_compile=config.jit_compile)

    test_data = datasets.pipeline(data.x_test, data.y_test, config.batch_size)
    history = plan.fit(  # one model.fit (adabatch under a strategy: one per batch size)
        model, validation_data=test_data, epochs=config.epochs, verbose=config.verbose,
        callbacks=[
            kcaps.callbacks.EpochTimer(),
            *plan.schedule_callbacks,
            # the same backup path on every worker: Keras keeps non-chief copies apart itself
            tf.keras.callbacks.BackupAndRestore(os.path.join(config.output_dir, "backup")),
            *plan.data_callbacks,
            tf.keras.callbacks.CSVLogger(os.path.join(out, "log.csv"), append=True),
            tf.keras.callbacks.TensorBoard(os.path.join(out, "tensorboard")),
            *callbacks,
        ],
    ).history

    start = time.perf_counter()
    scores = kcaps.models.classifier(model).predict(data.x_test, batch_size=256, verbose=0)
    inference_seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(scores, axis=-1) == data.y_test))
    model.save(os.path.join(out, "model.keras"))
    epoch_seconds = history.get("epoch_seconds", [])
    metrics = {
        "model": config.model,
        "dataset": data.describe(),
        "parameters": int(model.count_params()),
        "epochs_run": len(history.get("loss", [])),
        "test_accuracy": accuracy,
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "train_seconds": float(np.sum(epoch_seconds)) if epoch_seconds else None,
        "test_images_per_second": len(data.x_test) / inference_seconds,
        "replicas": strategy.num_replicas_in_sync,
        "precision": tf.keras.mixed_precision.global_policy().name,
        "history": {k: [float(v) for v in values] for k, values in history.items()},
    }
    _write_json(os.path.join(out, "metrics.json"), metrics)
    plots.plot_history(history, os.path.join(out, "training_curves.png"),
                       title=f"{config.model} on {config.dataset}")
    return TrainResult(model, history, metrics)


def _write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
