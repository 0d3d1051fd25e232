"""`TrainConfig`: everything one training run depends on, all of its checks, and its flags.

Each field carries its command-line help in its metadata; `kcaps_training.cli` builds the
`kcaps train` / `quickstart` / `sweep` flags (`--batch-size` for `batch_size`, ...) from the fields
and the config back from the parsed flags, so a new field and its flag are one line here:

    jit_compile: bool = option(False, "compile the train step with XLA")  # --[no-]jit-compile

Metadata keys (all optional): `help`; `parse` (the flag's type; default: the type of the
default, a bool default gives `--name/--no-name`); `choices`; `names` (flag words -> values,
e.g. `--decoder none` -> `False`); `group` (an argparse group title); `flag=False` for a field
without a flag (`output_dir`: each command names its own `--output`).

>>> from kcaps_training.config import TrainConfig
>>> TrainConfig(epochs=3).lr_policy
'epoch_decay'
>>> TrainConfig(epochs=0)
Traceback (most recent call last):
...
ValueError: TrainConfig: `epochs` must be a positive integer, got 0
"""
import dataclasses

import kcaps
from kcaps import _checks
from kcaps_training import datasets, distribute

FAST = "fast training (FasTrCaps)"
DECODERS = {"default": None, "none": False, "full": True, "small": "small"}


def option(default, help=None, **metadata):
    """A `TrainConfig` field: its default and its flag's help and metadata (module doc)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def parse_weight_sharing(value):
    """`None`/"none" -> None, "type"/"position" as is, an int (or its digits) -> int."""
    if value is None or value == "none":
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run depends on (written to `config.json`).

    Every field is checked when the config is made, before any data loads or TensorFlow runs;
    a bad value is a ValueError naming the field and the value.
    """

    model: str = option("small_capsnet", "model builder from kcaps.models (default: %(default)s)")
    dataset: str = option("digits", "digits (offline), real_digits, idx, mnist, fashion_mnist, "
                                    "cifar10, smallnorb (default: %(default)s)")
    data_dir: str | None = option(None, "idx directory or tfds data_dir (real_digits: "
                                        "../shared/data/mnist)", parse=str)
    epochs: int = option(15, "training epochs (default: %(default)s)")
    batch_size: int = option(64, "training batch size (default: %(default)s)")
    learning_rate: float = option(1e-3, "Adam's (largest) learning rate (default: %(default)s)")
    lr_decay: float = option(0.9, "learning-rate factor per epoch (default: %(default)s)")
    max_shift: int = option(2, "random shift augmentation in pixels (default: %(default)s)")
    routing_iterations: int = option(3, "routing iterations (default: %(default)s)")
    output_dir: str = option("runs/latest", flag=False)
    seed: int = option(0, "random seed (default: %(default)s)")
    verbose: int = option(1, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    strategy: str = option("default", "default, mirrored (all GPUs, else all logical CPUs) or "
                                      "multiworker (configured by TF_CONFIG) (default: %(default)s)")
    precision: str = option("float32", "float32, mixed_float16, mixed_bfloat16 or auto (float16 "
                                       "on GPU, bfloat16 on CPU) (default: %(default)s)")
    # Fast training (FasTrCaps, see `kcaps_training.fast_training`); these defaults keep the recipe.
    lr_policy: str = option("epoch_decay", "learning-rate policy (default: %(default)s; see "
                                           "kcaps.policies)",
                            choices=kcaps.policies.LR_POLICIES, group=FAST)
    batch_policy: str = option("fixed", "'adabatch': --warm-batch-size for --warm-epochs, then "
                                        "--adabatch-size",
                               choices=kcaps.policies.BATCH_POLICIES, group=FAST)
    warm_epochs: int = option(3, "adabatch / warm_adabatch: epochs of the first phase "
                                 "(default: %(default)s)", group=FAST)
    warm_batch_size: int = option(1, "adabatch: batch size of the warm epochs "
                                     "(default: %(default)s)", group=FAST)
    adabatch_size: int = option(16, "adabatch: batch size after the warm epochs "
                                    "(default: %(default)s)", group=FAST)
    decay_steps: int | None = option(None, "exp_decay: steps per factor 0.96 (default: tenfold "
                                           "over the run)", parse=int, group=FAST)
    weight_sharing: int | str | None = option(
        None, "class-capsule weight sharing: none, type, position or an int K",
        parse=parse_weight_sharing, group=FAST)
    sharing_order: str = option("position_major", "how an int K counts capsules (type_major: "
                                                  "the paper's tiling)",
                                choices=kcaps.projections.SHARING_ORDERS, group=FAST)
    decoder: bool | str | None = option(None, "reconstruction decoder: the model's default, "
                                              "none, full or small", names=DECODERS, group=FAST)
    squash: str | None = option(None, "squash function of the capsule layers (default: the "
                                      "model's own)",
                                choices=tuple(kcaps.ops.SQUASHES), parse=str, group=FAST)
    steps_per_execution: int = option(1, "optimizer steps per TensorFlow call (cuts per-step "
                                         "overhead)", group=FAST)
    # XLA for the train step; off by default: it slows capsnet's convs on CPU (issue 19)
    jit_compile: bool = option(False, "compile the train step with XLA; falls back without it, "
                                      "with a warning, where XLA cannot compile the model "
                                      "(default: %(default)s)")

    def __post_init__(self):
        for field in ("epochs", "batch_size", "routing_iterations", "warm_epochs",
                      "warm_batch_size", "adabatch_size", "steps_per_execution"):
            _checks.positive_int("TrainConfig", field, getattr(self, field))
        for field in ("learning_rate", "lr_decay"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._fail(field, "must be a number")
        if not self.learning_rate > 0:
            self._fail("learning_rate", "must be > 0")
        if not 0 < self.lr_decay <= 1:
            self._fail("lr_decay", "must be in (0, 1]")
        _checks.non_negative_int("TrainConfig", "max_shift", self.max_shift)
        kcaps.models.get(self.model)  # unknown names fail here, before any data is loaded
        if self.dataset not in datasets.NAMES:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(datasets.NAMES)}")
        distribute.check_strategy_name(self.strategy)
        if self.precision not in distribute.PRECISIONS:
            raise ValueError(f"TrainConfig: unknown precision {self.precision!r}; valid: "
                             f"{', '.join(distribute.PRECISIONS)}")
        if self.strategy == "multiworker":
            distribute.parse_tf_config()
        for field in ("lr_policy", "batch_policy", "sharing_order", "squash"):
            choices = _metadata(field)["choices"]
            if field == "squash" and self.squash is None:  # the model's own squash
                continue
            if getattr(self, field) not in choices:
                self._fail(field, f"must be one of {', '.join(choices)}")
        if self.decay_steps is not None:
            _checks.positive_int("TrainConfig", "decay_steps", self.decay_steps)
        sharing = self.weight_sharing
        if sharing is not None and sharing not in kcaps.projections.SHARING_MODES and (
                isinstance(sharing, bool) or not isinstance(sharing, int) or sharing < 1):
            self._fail("weight_sharing", "must be None, 'type', 'position' or a positive integer")
        if self.decoder not in DECODERS.values():
            self._fail("decoder", "must be None (the model's default), False, True or 'small'")

    def _fail(self, field, message):
        raise ValueError(f"TrainConfig: `{field}` {message}, got {getattr(self, field)!r}")

    def check_replicas(self, replicas):
        """Raise ValueError naming the field if a training batch is smaller than `replicas`.

        Batch sizes are global (split across the replicas, as `model.fit` does): each replica
        needs at least one example per step. Checked once the strategy is made, before training.
        """
        fields = ("batch_size",) if self.batch_policy == "fixed" else (
            "warm_batch_size", "adabatch_size")
        for field in fields:
            value = getattr(self, field)
            if value < replicas:
                raise ValueError(
                    f"TrainConfig: `{field}` ({value}) is smaller than the {replicas} replicas of "
                    f"strategy {self.strategy!r}; batch sizes are global (split across the "
                    f"replicas), so it must be at least {replicas}")


def _metadata(name):
    return TrainConfig.__dataclass_fields__[name].metadata


def flag_fields():
    """The fields that have a command-line flag, in order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True)]


def parse_value(name, text):
    """A field's value from its command-line (or sweep-grid) text."""
    field = TrainConfig.__dataclass_fields__[name]
    names = field.metadata.get("names")
    if names is not None:
        return names.get(text, text)
    return field.metadata.get("parse", type(field.default))(text)
