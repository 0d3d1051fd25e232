"""An adaptive batch size inside one `model.fit`: a batch schedule, a tf.data pipeline, a callback.

FasTrCaps (Marchisio et al., 2020) trains with batch size 1 for the first epochs and then a
larger one ("AdaBatch"; with warm restarts, "WarmAdaBatch"). Inside one `model.fit`, Keras makes a
new iterator over a `tf.data.Dataset` at every epoch and reads its cardinality again for the
epoch's number of steps; a dataset whose batching a callback replaces between epochs therefore
gives every epoch its batch size and its right number of optimizer steps. The pieces:

- `BatchSizeSchedule`: the batch size of each epoch and the optimizer steps it takes.
- `AdaptiveBatchDataset`: a `tf.data.Dataset` of the training examples in batches of its current
  `batch_size`; shuffling and augmentation stay in the (unbatched) example pipeline.
- `AdaptiveBatchSize`: the callback that sets the dataset's batch size for every epoch, writes
  `batch_size` into the logs (History, CSVLogger), and finds the right epoch again when
  `BackupAndRestore` resumes a run (from the optimizer's step count).
- `fit_adaptive`: `model.fit` for any distribution strategy (see below).

Under a distribution strategy one `model.fit` cannot change the batch size (checked on tf_keras
2.21): Keras distributes the dataset once per `fit` (`strategy.experimental_distribute_dataset`,
which freezes the batching it sees then) and, for distributed data, fixes the steps per epoch
when `fit` starts; with a dataset of unknown cardinality (batching by a size read from a
variable at run time) it keeps the first epoch's step count, so a later epoch with larger
batches runs out of data and ends training. `fit_adaptive` therefore runs one `model.fit`
without a strategy and, under a strategy, one `model.fit` per phase of constant batch size, with
the same callbacks and `BackupAndRestore` resuming in any phase. Batch sizes are global (split
across the replicas, like `model.fit`'s own), so each must be at least the number of replicas.

>>> import kcaps, numpy as np, tensorflow as tf
>>> schedule = kcaps.adaptive_batch.BatchSizeSchedule.warm(warm_epochs=3, warm_batch_size=1,
...                                                         batch_size=16)
>>> [schedule.batch_size(epoch) for epoch in range(5)]
[1, 1, 1, 16, 16]
>>> [schedule.steps_per_epoch(epoch, num_examples=8000) for epoch in range(5)]
[8000, 8000, 8000, 500, 500]
>>> examples = tf.data.Dataset.from_tensor_slices((np.zeros((100, 4)), np.zeros(100)))
>>> data = kcaps.adaptive_batch.AdaptiveBatchDataset(examples.shuffle(100), batch_size=1)
>>> callback = kcaps.adaptive_batch.AdaptiveBatchSize(schedule, data)
>>> int(data.cardinality()), data.num_examples
(100, 100)
>>> # model.fit(data, epochs=10, callbacks=[callback])  -> 100 steps x 3 epochs, then 7 steps
>>> # fit_adaptive(model, data, 10, [callback])  -> the same, under any distribution strategy
"""
import bisect
import math

import tensorflow as tf

from kcaps import _checks

_register = tf.keras.utils.register_keras_serializable(package="kcaps")


@_register
class BatchSizeSchedule:
    """Piecewise-constant batch size over epochs: `batch_sizes[k]` from epoch `boundaries[k-1]`.

    Args:
      batch_sizes: positive ints, one per phase.
      boundaries: increasing positive epoch numbers (0-based) where the next phase starts; one
        fewer than `batch_sizes`.
    """

    def __init__(self, batch_sizes, boundaries=()):
        if isinstance(batch_sizes, int) and not isinstance(batch_sizes, bool):
            batch_sizes = [batch_sizes]
        self.batch_sizes = [_checks.positive_int("BatchSizeSchedule", "batch_sizes", b)
                            for b in batch_sizes]
        self.boundaries = [_checks.positive_int("BatchSizeSchedule", "boundaries", e)
                           for e in boundaries]
        if not self.batch_sizes or len(self.boundaries) != len(self.batch_sizes) - 1:
            raise ValueError(
                f"BatchSizeSchedule: need one more batch size than boundaries, got "
                f"batch_sizes={batch_sizes!r} and boundaries={boundaries!r}")
        if any(later <= earlier for earlier, later in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(
                f"BatchSizeSchedule: `boundaries` must be strictly increasing, got {boundaries!r}")

    @classmethod
    def warm(cls, warm_epochs=3, warm_batch_size=1, batch_size=16):
        """FasTrCaps' AdaBatch rule: `warm_batch_size` for `warm_epochs` epochs, then `batch_size`.

        The defaults are the values the authors' code runs (batch 1 for 3 epochs, then 16; it
        prepares a third size for later epochs but trains with the same loader throughout).
        """
        warm_epochs = _checks.positive_int("BatchSizeSchedule.warm", "warm_epochs", warm_epochs)
        return cls([warm_batch_size, batch_size], [warm_epochs])

    def batch_size(self, epoch):
        """The batch size of `epoch` (0-based)."""
        return self.batch_sizes[bisect.bisect_right(self.boundaries, epoch)]

    def steps_per_epoch(self, epoch, num_examples):
        """Optimizer steps of `epoch` over `num_examples` examples (the last batch may be short)."""
        return math.ceil(num_examples / self.batch_size(epoch))

    def steps_before(self, epoch, num_examples):
        """Optimizer steps of all epochs before `epoch`."""
        return sum(self.steps_per_epoch(e, num_examples) for e in range(epoch))

    def epoch_at_step(self, step, num_examples):
        """The epoch that optimizer step `step` (0-based) belongs to."""
        epoch, start = 0, 0
        while start + self.steps_per_epoch(epoch, num_examples) <= step:
            start += self.steps_per_epoch(epoch, num_examples)
            epoch += 1
        return epoch

    def check_replicas(self, replicas):
        """Raise ValueError if a batch size is smaller than `replicas`.

        Batch sizes are global: a distribution strategy splits each batch across its replicas,
        and every replica needs at least one example per step. (Defining the warm batch per
        replica instead would not be the paper's schedule: batch 1 on 8 replicas would be 8.)
        """
        for index, size in enumerate(self.batch_sizes):
            if size < replicas:
                raise ValueError(
                    f"BatchSizeSchedule: `batch_sizes[{index}]` = {size} is smaller than the "
                    f"{replicas} replicas of the distribution strategy; batch sizes are global "
                    f"(split across the replicas), so each must be at least {replicas}")

    def get_config(self):
        return {"batch_sizes": list(self.batch_sizes), "boundaries": list(self.boundaries)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"BatchSizeSchedule(batch_sizes={self.batch_sizes}, boundaries={self.boundaries})"


class AdaptiveBatchDataset(tf.data.Dataset):
    """A `tf.data.Dataset` of batches whose size can change between epochs.

    It batches `examples` (a dataset of single examples, shuffled and augmented as wanted) in
    batches of `batch_size`, the last one possibly short, and prefetches. Setting `batch_size`
    re-batches: the iterator Keras makes at the next epoch, and the cardinality Keras reads for
    that epoch's steps, are those of the new batching. Pass it to `model.fit` as it is (a
    `.map()` or `.batch()` on it would freeze the current batching).

    This subclasses `tf.data.Dataset` by forwarding its dataset tensor (the private
    `_variant_tensor` of `tf.data`, as TensorFlow's own wrappers do) to the current batching;
    tested on TensorFlow 2.21.

    Args:
      examples: a `tf.data.Dataset` of single examples with a known, finite cardinality.
      batch_size: the initial batch size (an `AdaptiveBatchSize` callback then sets it).
    """

    def __init__(self, examples, batch_size):
        if not isinstance(examples, tf.data.Dataset):
            raise ValueError(f"AdaptiveBatchDataset: `examples` must be a tf.data.Dataset of "
                             f"single examples, got {type(examples).__name__}")
        count = int(examples.cardinality())
        if count < 1:
            raise ValueError(
                f"AdaptiveBatchDataset: `examples` must have a known, finite, non-zero number of "
                f"examples (got cardinality {count}); use `assert_cardinality` if it is known")
        self._examples, self._num_examples = examples, count
        self.batch_size = batch_size
        super().__init__(self._batched._variant_tensor)

    @property
    def batch_size(self):
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value):
        self._batch_size = _checks.positive_int("AdaptiveBatchDataset", "batch_size", value)
        self._batched = self._examples.batch(self._batch_size).prefetch(tf.data.AUTOTUNE)

    @property
    def num_examples(self):
        return self._num_examples

    @property
    def _variant_tensor(self):  # what iterators and `cardinality()` read: the current batching
        return self._batched._variant_tensor

    def _inputs(self):
        return [self._examples]

    @property
    def element_spec(self):
        return self._batched.element_spec


class AdaptiveBatchSize(tf.keras.callbacks.Callback):
    """Switches the batch size of an `AdaptiveBatchDataset` between epochs, as a schedule says.

    Keras makes the next epoch's iterator and reads its steps after the previous epoch's callbacks
    and before the next epoch's, so the size for epoch `e + 1` is set at the end of epoch `e`,
    and the first epoch's when training begins. That epoch is found from the optimizer's
    step count, which `BackupAndRestore` restores: a resumed run continues with the right size
    (put this callback after `BackupAndRestore`). Writes `batch_size` into each epoch's logs (put
    it before `CSVLogger`) and keeps `params["steps"]` current for other callbacks. (Keras'
    progress bar reads the steps once, so with `verbose=1` its total is the first epoch's.)

    Under a distribution strategy one `model.fit` keeps the batching its data had when it started
    (see the module doc): train through `fit_adaptive`, which runs one `fit` per batch size. A
    plain `model.fit` under a strategy whose epochs need another size raises ValueError at the
    first such epoch, and a batch size smaller than the number of replicas raises ValueError
    when training begins.

    Args:
      schedule: a `BatchSizeSchedule`.
      data: the `AdaptiveBatchDataset` given to `model.fit`.
    """

    def __init__(self, schedule, data):
        super().__init__()
        if not isinstance(schedule, BatchSizeSchedule):
            raise ValueError(f"AdaptiveBatchSize: `schedule` must be a BatchSizeSchedule, got "
                             f"{type(schedule).__name__}")
        if not isinstance(data, AdaptiveBatchDataset):
            raise ValueError(f"AdaptiveBatchSize: `data` must be an AdaptiveBatchDataset, "
                             f"got {type(data).__name__}")
        self.schedule, self.data = schedule, data
        self._distributed_batch_size = None

    def _set_epoch(self, epoch):
        self.data.batch_size = self.schedule.batch_size(epoch)
        if self.params is not None:
            self.params["steps"] = self.schedule.steps_per_epoch(epoch, self.data.num_examples)

    def on_train_begin(self, logs=None):
        # fit runs callbacks inside the model's strategy scope (none: the default strategy)
        self._distributed_batch_size = None
        if tf.distribute.has_strategy():
            self.schedule.check_replicas(self.model.distribute_strategy.num_replicas_in_sync)
            self._distributed_batch_size = self.data.batch_size  # what this fit distributed
        step = int(self.model.optimizer.iterations.numpy())
        self._set_epoch(self.schedule.epoch_at_step(step, self.data.num_examples))

    def on_epoch_begin(self, epoch, logs=None):
        expected = self.schedule.batch_size(epoch)
        if self._distributed_batch_size not in (None, expected):
            raise ValueError(
                f"AdaptiveBatchSize: epoch {epoch} should train with batch size {expected}, but "
                f"under the distribution strategy "
                f"{type(self.model.distribute_strategy).__name__} this model.fit distributed "
                f"its data once, in batches of {self._distributed_batch_size}; train with "
                f"kcaps.adaptive_batch.fit_adaptive (one model.fit per batch size)")
        if self.data.batch_size != expected:
            raise ValueError(
                f"AdaptiveBatchSize: epoch {epoch} should train with batch size {expected} but "
                f"the data were prepared with {self.data.batch_size}; the optimizer's step "
                f"count ({int(self.model.optimizer.iterations.numpy())}) does not match the "
                f"epoch (was `initial_epoch` given without restoring the optimizer?)")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["batch_size"] = self.schedule.batch_size(epoch)
        self._set_epoch(epoch + 1)


class _DeleteBackupWhenStopped(tf.keras.callbacks.Callback):
    """Gives `BackupAndRestore` its own `delete_checkpoint` back when a callback stops training
    (as one `fit` would delete the backup then); runs last, after `EarlyStopping` and the like."""

    def __init__(self, backups, delete):
        super().__init__()
        self.backups, self.delete = backups, delete

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            for backup, delete in zip(self.backups, self.delete):
                backup.delete_checkpoint = delete


def fit_adaptive(model, data, epochs, callbacks=(), initial_epoch=0, **fit_kwargs):
    """`model.fit(data, ...)` with an adaptive batch size, with or without a distribution strategy.

    Without a strategy this is exactly one `model.fit(data, epochs=epochs, callbacks=callbacks,
    initial_epoch=initial_epoch, **fit_kwargs)`.

    Under a strategy (the model built in its scope) one `fit` cannot change the batch size (see
    the module doc), so this runs one `model.fit` per phase of the schedule: `initial_epoch` the
    phase's first epoch and `epochs` the next phase's first (or `epochs`), the data batched at the
    phase's size, the same callbacks. Epoch numbers, the optimizer's step count, the learning-rate
    schedule, CSVLogger's file and TensorBoard's steps carry on across phases as in one `fit`;
    callbacks see one `on_train_begin`/`on_train_end` per phase (so `EarlyStopping`'s patience
    restarts at a switch), and a callback that stops training ends the run. `BackupAndRestore`
    keeps its backup until the last phase ends (its `delete_checkpoint` is off for the others):
    every phase's `fit` restores it first, so a run interrupted in any phase resumes at the epoch
    after the last finished one, and the phases that the backup has passed run no epoch.
    One difference from one `fit`: Keras' `fit` opens one unused iterator before its first
    epoch's, so over a dataset that reshuffles every iteration each further phase draws one more
    permutation; epochs after a switch see other (equally fresh) orders than a one-`fit` run.

    Args:
      model: a compiled model.
      data: the `AdaptiveBatchDataset` to train on.
      epochs: the epoch to end at, as in `model.fit`.
      callbacks: the fit's callbacks, with the one `AdaptiveBatchSize` of `data`.
      initial_epoch: as in `model.fit`.
      **fit_kwargs: anything else `model.fit` takes (`validation_data`, `verbose`, ...).

    Returns:
      A `History` of all epochs (also `model.history`).

    Raises:
      ValueError: no `AdaptiveBatchSize` of `data` among `callbacks`, or a batch size smaller
        than the strategy's number of replicas.
    """
    callbacks = list(callbacks)
    adaptive = [c for c in callbacks if isinstance(c, AdaptiveBatchSize) and c.data is data]
    if len(adaptive) != 1:
        raise ValueError(f"fit_adaptive: `callbacks` must hold one AdaptiveBatchSize of `data`, "
                         f"found {len(adaptive)}")
    strategy = model.distribute_strategy
    with strategy.scope():
        distributed = tf.distribute.has_strategy()  # False for the default strategy
    if not distributed:
        return model.fit(data, epochs=epochs, callbacks=callbacks, initial_epoch=initial_epoch,
                         **fit_kwargs)
    schedule = adaptive[0].schedule
    schedule.check_replicas(strategy.num_replicas_in_sync)
    starts = [initial_epoch, *(b for b in schedule.boundaries if initial_epoch < b < epochs)]
    backups = [c for c in callbacks if isinstance(c, tf.keras.callbacks.BackupAndRestore)]
    delete = [backup.delete_checkpoint for backup in backups]
    callbacks.append(_DeleteBackupWhenStopped(backups, delete))
    history = tf.keras.callbacks.History()
    history.set_model(model)
    history.epoch = []
    try:
        for start, end in zip(starts, [*starts[1:], epochs]):
            for backup, keep_deleting in zip(backups, delete):
                backup.delete_checkpoint = keep_deleting and end == epochs
            data.batch_size = schedule.batch_size(start)  # what this fit distributes
            phase = model.fit(data, epochs=end, initial_epoch=start, callbacks=callbacks,
                              **fit_kwargs)
            history.epoch.extend(phase.epoch)
            for key, values in phase.history.items():
                history.history.setdefault(key, []).extend(values)
            history.set_params(phase.params)
            if model.stop_training:
                break
    finally:
        for backup, keep_deleting in zip(backups, delete):
            backup.delete_checkpoint = keep_deleting
    model.history = history
    return history
