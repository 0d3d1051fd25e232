"""Fast-training options of the recipe (FasTrCaps): learning-rate and batch policies, model options.

`kcaps_training.train` asks `plan(config, data)` for its learning rate, training data and schedule
callbacks. With `TrainConfig`'s defaults (`lr_policy="epoch_decay"`, `batch_policy="fixed"`) the
plan is the recipe's own: Adam at `learning_rate`, decayed by `lr_decay` every epoch through
`LearningRateScheduler`, and a `tf.data` pipeline at `batch_size`. Otherwise:

- `lr_policy` in `kcaps.policies.LR_POLICIES`: a per-step `LearningRateSchedule` inside the
  optimizer (saved and restored with it) and a `LearningRateLogger` (`lr`, `lr_end` per epoch);
- `batch_policy="adabatch"`: an `AdaptiveBatchDataset` over the same shuffled, shifted examples
  as the recipe's `tf.data` pipeline, and an `AdaptiveBatchSize` callback (`batch_size` per
  epoch): `warm_batch_size` for `warm_epochs`, then `adabatch_size`. It trains through
  `kcaps.adaptive_batch.fit_adaptive`: one `model.fit`, or under a distribution strategy one per
  batch size (Keras distributes a dataset once per `fit`). Batch sizes are global, so under a
  strategy each must be at least the number of replicas (`check_replicas`).

WarmAdaBatch is `lr_policy="warm_adabatch", batch_policy="adabatch"` (the defaults of the other
fields are the paper's: batch 1 for 3 epochs, then 16). `steps_per_execution` runs several
optimizer steps per call into TensorFlow, which only cuts Keras' per-step overhead (it matters at
batch size 1); the updates are the same.
"""
import dataclasses

import tensorflow as tf

import kcaps
from kcaps import adaptive_batch, policies
from kcaps_training import datasets

DEFAULT_LR_POLICY = "epoch_decay"  # the recipe's own: learning_rate * lr_decay ** epoch
LR_POLICIES = (DEFAULT_LR_POLICY, *policies.LR_POLICIES)
BATCH_POLICIES = policies.BATCH_POLICIES
DECODERS = {"default": None, "none": False, "full": True, "small": "small"}


@dataclasses.dataclass
class Plan:
    """What `model.fit` needs from the policies: optimizer rate, data, callbacks."""

    learning_rate: object  # float or LearningRateSchedule
    train_data: object  # tf.data.Dataset (an AdaptiveBatchDataset for adabatch)
    schedule_callbacks: list  # before BackupAndRestore
    data_callbacks: list  # after BackupAndRestore, before CSVLogger

    def fit(self, model, **fit_kwargs):
        """`model.fit` on `train_data`; adabatch through `fit_adaptive` (any strategy)."""
        if isinstance(self.train_data, adaptive_batch.AdaptiveBatchDataset):
            return adaptive_batch.fit_adaptive(model, self.train_data, **fit_kwargs)
        return model.fit(self.train_data, **fit_kwargs)


def parse_weight_sharing(value):
    """`None`/"none" -> None, "type"/"position" as is, an int (or its digits) -> int."""
    if value is None or value == "none":
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def check(config):
    """Raise ValueError naming the field for a bad fast-training field of a `TrainConfig`."""
    def fail(field, message):
        raise ValueError(f"TrainConfig: `{field}` {message}, got {getattr(config, field)!r}")

    if config.lr_policy not in LR_POLICIES:
        fail("lr_policy", f"must be one of {', '.join(LR_POLICIES)}")
    if config.batch_policy not in BATCH_POLICIES:
        fail("batch_policy", f"must be one of {', '.join(BATCH_POLICIES)}")
    for field in ("warm_epochs", "warm_batch_size", "adabatch_size", "steps_per_execution"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(field, "must be a positive integer")
    if config.decay_steps is not None and (
            isinstance(config.decay_steps, bool) or not isinstance(config.decay_steps, int)
            or config.decay_steps < 1):
        fail("decay_steps", "must be a positive integer or None")
    sharing = config.weight_sharing
    if sharing is not None and sharing not in kcaps.projections.SHARING_MODES and (
            isinstance(sharing, bool) or not isinstance(sharing, int) or sharing < 1):
        fail("weight_sharing", "must be None, 'type', 'position' or a positive integer")
    if config.sharing_order not in kcaps.projections.SHARING_ORDERS:
        fail("sharing_order", f"must be one of {', '.join(kcaps.projections.SHARING_ORDERS)}")
    if config.decoder not in DECODERS.values():
        fail("decoder", "must be None (the model's default), False, True or 'small'")
    if config.squash not in kcaps.ops.SQUASH_FUNCTIONS:
        fail("squash", f"must be one of {', '.join(kcaps.ops.SQUASH_FUNCTIONS)}")


def check_replicas(config, replicas):
    """Raise ValueError naming the field if a training batch is smaller than `replicas`.

    Batch sizes are global (split across the replicas, as `model.fit` does): each replica needs
    at least one example per step. Called once the strategy is made, before any training.
    """
    fields = ("batch_size",) if config.batch_policy == "fixed" else (
        "warm_batch_size", "adabatch_size")
    for field in fields:
        value = getattr(config, field)
        if value < replicas:
            raise ValueError(
                f"TrainConfig: `{field}` ({value}) is smaller than the {replicas} replicas of "
                f"strategy {config.strategy!r}; batch sizes are global (split across the "
                f"replicas), so it must be at least {replicas}")


def model_options(config):
    """Model-builder keyword arguments: only the non-default ones, so every builder works."""
    options = {}
    if config.weight_sharing is not None:
        options["weight_sharing"] = config.weight_sharing
        if config.sharing_order != "position_major":
            options["sharing_order"] = config.sharing_order
    if config.decoder is not None:
        options["decoder"] = config.decoder
    if config.squash != "squash":
        options["squash"] = config.squash
    return options


def batch_schedule(config):
    return policies.batch_size_schedule(
        config.batch_policy, config.batch_size, config.warm_epochs, config.warm_batch_size,
        config.adabatch_size)


def plan(config, data):
    """The learning rate, training data and callbacks that `config`'s policies ask for."""
    batches = batch_schedule(config)
    num_examples = len(data.x_train)
    if config.lr_policy == DEFAULT_LR_POLICY:
        learning_rate = config.learning_rate
        schedule_callbacks = [tf.keras.callbacks.LearningRateScheduler(
            lambda epoch: config.learning_rate * config.lr_decay ** epoch)]
    else:
        learning_rate = policies.learning_rate_schedule(
            config.lr_policy, config.learning_rate, batches, num_examples, config.epochs,
            warm_epochs=config.warm_epochs, decay_steps=config.decay_steps)
        schedule_callbacks = [kcaps.lr_schedules.LearningRateLogger(learning_rate)]

    if config.batch_policy == "fixed":
        train_data = datasets.pipeline(data.x_train, data.y_train, config.batch_size, shuffle=True,
                                       max_shift=config.max_shift, seed=config.seed)
        return Plan(learning_rate, train_data, schedule_callbacks, [])
    train_data = adaptive_batch.AdaptiveBatchDataset(datasets.shard_by_element(
        datasets.examples(data.x_train, data.y_train, shuffle=True, max_shift=config.max_shift,
                          seed=config.seed)), batches.batch_size(0))
    return Plan(learning_rate, train_data, schedule_callbacks,
                [adaptive_batch.AdaptiveBatchSize(batches, train_data)])


def add_arguments(parser):
    """The `kcaps train` flags of the fast-training fields."""
    defaults = _config_defaults()
    group = parser.add_argument_group("fast training (FasTrCaps)")
    group.add_argument("--lr-policy", choices=LR_POLICIES, default=defaults["lr_policy"],
                       help="learning-rate policy (default: %(default)s; see kcaps.policies)")
    group.add_argument("--batch-policy", choices=BATCH_POLICIES,
                       default=defaults["batch_policy"],
                       help="'adabatch': --warm-batch-size for --warm-epochs, then --adabatch-size")
    group.add_argument("--warm-epochs", type=int, default=defaults["warm_epochs"])
    group.add_argument("--warm-batch-size", type=int, default=defaults["warm_batch_size"])
    group.add_argument("--adabatch-size", type=int, default=defaults["adabatch_size"])
    group.add_argument("--decay-steps", type=int, default=defaults["decay_steps"],
                       help="exp_decay: steps per factor 0.96 (default: tenfold over the run)")
    group.add_argument("--weight-sharing", type=parse_weight_sharing,
                       default=defaults["weight_sharing"],
                       help="class-capsule weight sharing: none, type, position or an int K")
    group.add_argument("--sharing-order", choices=kcaps.projections.SHARING_ORDERS,
                       default=defaults["sharing_order"],
                       help="how an int K counts capsules (type_major: the paper's tiling)")
    group.add_argument("--decoder", choices=tuple(DECODERS), default="default",
                       help="reconstruction decoder: the model's default, none, full or small")
    group.add_argument("--squash", choices=tuple(kcaps.ops.SQUASH_FUNCTIONS),
                       default=defaults["squash"])
    group.add_argument("--steps-per-execution", type=int,
                       default=defaults["steps_per_execution"],
                       help="optimizer steps per TensorFlow call (cuts per-step overhead)")


def config_kwargs(args):
    """`TrainConfig` keyword arguments from the flags of `add_arguments`."""
    return dict(
        lr_policy=args.lr_policy, batch_policy=args.batch_policy, warm_epochs=args.warm_epochs,
        warm_batch_size=args.warm_batch_size, adabatch_size=args.adabatch_size,
        decay_steps=args.decay_steps, weight_sharing=args.weight_sharing,
        sharing_order=args.sharing_order, decoder=DECODERS[args.decoder], squash=args.squash,
        steps_per_execution=args.steps_per_execution)


def _config_defaults():
    from kcaps_training.train import TrainConfig  # noqa: WPS433  (train imports this module)

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}
