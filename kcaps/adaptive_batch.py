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
"""
import bisect
import math

import tensorflow as tf

from kcaps import schedules

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
        self.batch_sizes = [schedules.positive_steps("BatchSizeSchedule", "batch_sizes", b)
                            for b in batch_sizes]
        self.boundaries = [schedules.positive_steps("BatchSizeSchedule", "boundaries", e)
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
        warm_epochs = schedules.positive_steps("BatchSizeSchedule.warm", "warm_epochs", warm_epochs)
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
        self._batch_size = schedules.positive_steps("AdaptiveBatchDataset", "batch_size", value)
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

    Not for distribution strategies (it raises ValueError): a distributed dataset is built once,
    with one batch size.

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

    def _set_epoch(self, epoch):
        self.data.batch_size = self.schedule.batch_size(epoch)
        if self.params is not None:
            self.params["steps"] = self.schedule.steps_per_epoch(epoch, self.data.num_examples)

    def on_train_begin(self, logs=None):
        if tf.distribute.has_strategy():  # fit runs callbacks inside the model's strategy scope
            raise ValueError(
                f"AdaptiveBatchSize: the batch size cannot change under the distribution strategy "
                f"{type(tf.distribute.get_strategy()).__name__}: a distributed dataset is built "
                f"once, with one batch size; train with a fixed batch size")
        step = int(self.model.optimizer.iterations.numpy())
        self._set_epoch(self.schedule.epoch_at_step(step, self.data.num_examples))

    def on_epoch_begin(self, epoch, logs=None):
        expected = self.schedule.batch_size(epoch)
        if self.data.batch_size != expected:
            raise ValueError(
                f"AdaptiveBatchSize: epoch {epoch} should train with batch size {expected} but "
                f"the data were prepared with {self.data.batch_size}; the optimizer's step "
                f"count ({int(self.model.optimizer.iterations.numpy())}) does not match the "
                f"epoch (was `initial_epoch` given without restoring the optimizer?)")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["batch_size"] = self.data.batch_size
        self._set_epoch(epoch + 1)
