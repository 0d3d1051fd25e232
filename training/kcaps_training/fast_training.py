"""Fast-training options of the recipe (FasTrCaps): learning-rate and batch policies, model options.

`kcaps_training.train.fit` asks `plan(config, data)` for its learning rate, training data and
schedule callbacks. Every learning rate is a policy of `kcaps.policies` (`config.lr_policy`): a
float or a per-step `LearningRateSchedule` inside the optimizer (saved and restored with it),
logged by a `LearningRateLogger` (`lr`, `lr_end` per epoch). The default, `epoch_decay`, is the
CapsNet-Keras recipe: Adam at `learning_rate`, times `lr_decay` every epoch. The batches:

- `batch_policy="fixed"`: a `tf.data` pipeline at `batch_size`;
- `batch_policy="adabatch"`: an `AdaptiveBatchDataset` over the same shuffled, shifted examples,
  and an `AdaptiveBatchSize` callback (`batch_size` per epoch): `warm_batch_size` for
  `warm_epochs`, then `adabatch_size`. It trains through `kcaps.adaptive_batch.fit_adaptive`: one
  `model.fit`, or under a distribution strategy one per batch size (Keras distributes a dataset
  once per `fit`). Batch sizes are global, so under a strategy each must be at least the number
  of replicas (`TrainConfig.check_replicas`).

WarmAdaBatch is `lr_policy="warm_adabatch", batch_policy="adabatch"` (the defaults of the other
fields are the paper's: batch 1 for 3 epochs, then 16). `steps_per_execution` runs several
optimizer steps per call into TensorFlow, which only cuts Keras' per-step overhead (it matters at
batch size 1); the updates are the same.

The fields, their defaults and their checks live in `kcaps_training.config.TrainConfig`.
"""
import dataclasses

import tensorflow as tf

import kcaps
from kcaps import adaptive_batch, policies
from kcaps_training import datasets


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


def model_options(config):
    """Model-builder keyword arguments: only the non-default ones, so every builder works."""
    options = {}
    if config.weight_sharing is not None:
        options["weight_sharing"] = config.weight_sharing
        if config.sharing_order != "position_major":
            options["sharing_order"] = config.sharing_order
    if config.decoder is not None:
        options["decoder"] = config.decoder
    if config.squash is not None:  # None: the model's own (efficient_capsnet's is "efficient")
        options["squash"] = config.squash
    return options


def batch_schedule(config):
    return policies.batch_size_schedule(
        config.batch_policy, config.batch_size, config.warm_epochs, config.warm_batch_size,
        config.adabatch_size)


def examples(config, data):
    """The unbatched `(image, label)` training examples of `data`, shuffled each epoch.

    `data` is a `kcaps_training.datasets.Dataset` (its training split, shifted by up to
    `config.max_shift` pixels) or a `tf.data.Dataset` of single examples of known size (used as
    they are, e.g. MultiMNIST's, whose digits are already shifted).
    """
    if isinstance(data, tf.data.Dataset):
        size = int(data.cardinality())
        if size < 1:
            raise ValueError(f"training examples must be a tf.data.Dataset of known, finite size; "
                             f"got cardinality {size}")
        return data.shuffle(size, seed=config.seed)
    return datasets.examples(data.x_train, data.y_train, shuffle=True, max_shift=config.max_shift,
                             seed=config.seed)


def plan(config, data):
    """The learning rate, training data and callbacks that `config`'s policies ask for.

    `data`: see `examples`.
    """
    batches = batch_schedule(config)
    train_examples = datasets.shard_by_element(examples(config, data))
    learning_rate = policies.learning_rate_schedule(
        config.lr_policy, config.learning_rate, batches, int(train_examples.cardinality()),
        config.epochs, warm_epochs=config.warm_epochs, decay_steps=config.decay_steps,
        lr_decay=config.lr_decay)
    schedule_callbacks = [kcaps.lr_schedules.LearningRateLogger(learning_rate)]
    if config.batch_policy == "fixed":
        train_data = train_examples.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)
        return Plan(learning_rate, train_data, schedule_callbacks, [])
    train_data = adaptive_batch.AdaptiveBatchDataset(train_examples, batches.batch_size(0))
    return Plan(learning_rate, train_data, schedule_callbacks,
                [adaptive_batch.AdaptiveBatchSize(batches, train_data)])
