"""An adaptive batch size inside one `model.fit`: a batch schedule, a data sequence, a callback.

FasTrCaps (Marchisio et al., 2020) trains with batch size 1 for the first epochs and then a
larger one ("AdaBatch"; with warm restarts, "WarmAdaBatch"). Keras fixes neither the batch size nor
the steps per epoch of a `tf.keras.utils.Sequence`: it asks the sequence for `len()` at every
epoch, so a sequence whose batch size changes between epochs gives each epoch its right number of
optimizer steps. (A `tf.data.Dataset` cannot do this: its batch size and cardinality are fixed
when it is built.) The pieces:

- `BatchSizeSchedule`: the batch size of each epoch and the optimizer steps it takes.
- `AdaptiveBatchSequence`: the training arrays, reshuffled every epoch, served in batches of the
  current size, with an optional augmentation of each batch.
- `AdaptiveBatchSize`: the callback that sets the sequence's batch size for every epoch, writes
  `batch_size` into the logs (History, CSVLogger), and finds the right epoch again when
  `BackupAndRestore` resumes a run (from the optimizer's step count).

>>> import kcaps, numpy as np
>>> schedule = kcaps.adaptive_batch.BatchSizeSchedule.warm(warm_epochs=3, warm_batch_size=1,
...                                                         batch_size=16)
>>> [schedule.batch_size(epoch) for epoch in range(5)]
[1, 1, 1, 16, 16]
>>> [schedule.steps_per_epoch(epoch, num_examples=8000) for epoch in range(5)]
[8000, 8000, 8000, 500, 500]
>>> data = kcaps.adaptive_batch.AdaptiveBatchSequence(np.zeros((100, 4)), np.zeros(100), 1)
>>> callback = kcaps.adaptive_batch.AdaptiveBatchSize(schedule, data)
>>> # model.fit(data, epochs=10, callbacks=[callback])  -> 100 steps x 3 epochs, then 7 steps
"""
import bisect
import math

import numpy as np
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


class AdaptiveBatchSequence(tf.keras.utils.Sequence):
    """Training arrays served in shuffled batches whose size can change between epochs.

    `len()` is the number of batches at the current `batch_size`, which Keras reads at the start
    of every epoch. The order of the examples is reshuffled at the end of every epoch with the
    sequence's own generator (seeded), so runs are reproducible.

    Args:
      x: array of inputs `(num_examples, ...)`.
      y: array of targets `(num_examples, ...)`.
      batch_size: the initial batch size (an `AdaptiveBatchSize` callback then sets it).
      shuffle: reshuffle the examples every epoch.
      augment: optional function `(x_batch, rng) -> x_batch` applied to every batch.
      seed: seed of the shuffling and augmentation generator.
    """

    def __init__(self, x, y, batch_size, shuffle=True, augment=None, seed=0):
        super().__init__()
        if len(x) != len(y):
            raise ValueError(
                f"AdaptiveBatchSequence: x and y differ in length ({len(x)} and {len(y)})")
        if len(x) == 0:
            raise ValueError("AdaptiveBatchSequence: no examples")
        self.x, self.y = x, y
        self.batch_size = schedules.positive_steps("AdaptiveBatchSequence", "batch_size",
                                                   batch_size)
        self.shuffle, self.augment = shuffle, augment
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))

    @property
    def num_examples(self):
        return len(self.x)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.x[rows]
        if self.augment is not None:
            x = self.augment(x, self.rng)
        return x, self.y[rows]

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))


class AdaptiveBatchSize(tf.keras.callbacks.Callback):
    """Switches the batch size of an `AdaptiveBatchSequence` between epochs, as a schedule says.

    Keras reads `len(sequence)` - the steps of the coming epoch - after the previous epoch's
    callbacks and before the next epoch's, so the size for epoch `e + 1` is set at the end of
    epoch `e`, and the first epoch's when training begins. That epoch is found from the optimizer's
    step count, which `BackupAndRestore` restores: a resumed run continues with the right size
    (put this callback after `BackupAndRestore`). Writes `batch_size` into each epoch's logs (put
    it before `CSVLogger`) and keeps `params["steps"]` current for other callbacks. (Keras'
    progress bar reads the steps once, so with `verbose=1` its total is the first epoch's.)

    Not for distribution strategies: a distributed dataset is built once, with one batch size.

    Args:
      schedule: a `BatchSizeSchedule`.
      sequence: the `AdaptiveBatchSequence` given to `model.fit`.
    """

    def __init__(self, schedule, sequence):
        super().__init__()
        if not isinstance(schedule, BatchSizeSchedule):
            raise ValueError(f"AdaptiveBatchSize: `schedule` must be a BatchSizeSchedule, got "
                             f"{type(schedule).__name__}")
        if not isinstance(sequence, AdaptiveBatchSequence):
            raise ValueError(f"AdaptiveBatchSize: `sequence` must be an AdaptiveBatchSequence, "
                             f"got {type(sequence).__name__}")
        self.schedule, self.sequence = schedule, sequence

    def _set_epoch(self, epoch):
        self.sequence.batch_size = self.schedule.batch_size(epoch)
        if self.params is not None:
            self.params["steps"] = len(self.sequence)

    def on_train_begin(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self._set_epoch(self.schedule.epoch_at_step(step, self.sequence.num_examples))

    def on_epoch_begin(self, epoch, logs=None):
        expected = self.schedule.batch_size(epoch)
        if self.sequence.batch_size != expected:
            raise ValueError(
                f"AdaptiveBatchSize: epoch {epoch} should train with batch size {expected} but "
                f"the sequence was prepared with {self.sequence.batch_size}; the optimizer's step "
                f"count ({int(self.model.optimizer.iterations.numpy())}) does not match the "
                f"epoch (was `initial_epoch` given without restoring the optimizer?)")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["batch_size"] = self.sequence.batch_size
        self._set_epoch(epoch + 1)
