"""Learning-rate policies of FasTrCaps (Marchisio et al., 2020) as Keras `LearningRateSchedule`s.

The schedules are functions of the optimizer step (`optimizer.iterations`), as in the authors'
code, which sets the learning rate before every optimizer step. Being Keras schedules, they live
inside the optimizer: they are saved with it, restored by `BackupAndRestore`, and need no
callback to move the learning rate. `LearningRateLogger` writes the learning rate of each epoch
into the logs (History, CSVLogger) since no Keras callback does that for schedules.

- `CosineRestarts`: cosine annealing from `lr_max` to `lr_min` in cycles of given lengths, each
  restarting at `lr_max` (SGDR). FasTrCaps' "warm restarts" (cycles of one epoch) and the learning
  rate of WarmAdaBatch (one cycle over the warm epochs, one over the rest) are both this.
- `OneCycle`: the authors' one-cycle policy.
- Exponential decay is Keras' own `tf.keras.optimizers.schedules.ExponentialDecay`.

>>> import kcaps
>>> lr = kcaps.lr_schedules.CosineRestarts(lr_min=1e-4, lr_max=1e-3, cycle_steps=[4, 8])
>>> [round(float(lr(step)), 6) for step in (0, 2, 4, 8, 12, 16)]  # restarts at 4, 12, 20, ...
[0.001, 0.00055, 0.001, 0.00055, 0.001, 0.00055]
"""
import math

import tensorflow as tf

from kcaps import _checks

_register = tf.keras.utils.register_keras_serializable(package="kcaps")


@_register
class CosineRestarts(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Cosine annealing with warm restarts over cycles of given lengths (Loshchilov & Hutter).

    In a cycle of `T` steps, step `t = 0 .. T-1` has learning rate
    `lr_min + (lr_max - lr_min) * (1 + cos(pi * t / T)) / 2`: `lr_max` at the first step, falling
    towards `lr_min`, then a restart at `lr_max`. The cycles run in the order given; after the
    last one, it repeats.

    FasTrCaps uses two instances: "warm restarts" with one cycle per epoch, and the learning rate
    of WarmAdaBatch with `cycle_steps = [warm steps, remaining steps]`, so that the restart falls
    exactly on the batch-size switch (`kcaps.policies.learning_rate_schedule` derives the lengths
    from the dataset size). The authors' counter runs `t = 0 .. T` inclusive, so their cycles are
    one step longer and the restart lands one step after the batch switch; kcaps makes each cycle
    exactly `T` steps so that restarts land on epoch and batch-switch boundaries.

    Args:
      lr_min: learning rate at the end of a cycle (> 0).
      lr_max: learning rate at the start of a cycle (>= lr_min). FasTrCaps: `10 * lr_min`.
      cycle_steps: lengths of the cycles in optimizer steps (positive ints); the last repeats.
    """

    def __init__(self, lr_min, lr_max, cycle_steps, name=None):
        super().__init__()
        self.lr_min = _checks.positive_number("CosineRestarts", "lr_min", lr_min)
        self.lr_max = _checks.positive_number("CosineRestarts", "lr_max", lr_max)
        if self.lr_max < self.lr_min:
            raise ValueError(
                f"CosineRestarts: `lr_max` ({lr_max}) must be >= `lr_min` ({lr_min})")
        if isinstance(cycle_steps, int) and not isinstance(cycle_steps, bool):
            cycle_steps = [cycle_steps]
        if not isinstance(cycle_steps, (list, tuple)) or not cycle_steps:
            raise ValueError(
                f"CosineRestarts: `cycle_steps` must be a non-empty list of positive integers, "
                f"got {cycle_steps!r}")
        self.cycle_steps = [_checks.positive_int("CosineRestarts", "cycle_steps", s) for s in cycle_steps]
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "CosineRestarts"):
            step = tf.cast(step, tf.int64)
            lengths = tf.constant(self.cycle_steps, tf.int64)
            starts = tf.math.cumsum(lengths, exclusive=True)
            ends = tf.math.cumsum(lengths)
            cycle = tf.minimum(tf.searchsorted(ends, step[tf.newaxis], side="right")[0],
                               len(self.cycle_steps) - 1)
            t = step - tf.gather(starts, cycle)
            period = tf.gather(lengths, cycle)
            t = tf.math.floormod(t, period)  # the last cycle repeats
            fraction = tf.cast(t, tf.float32) / tf.cast(period, tf.float32)
            cosine = 0.5 * (1.0 + tf.cos(math.pi * fraction))
            return self.lr_min + (self.lr_max - self.lr_min) * cosine

    def get_config(self):
        return {"lr_min": self.lr_min, "lr_max": self.lr_max,
                "cycle_steps": list(self.cycle_steps), "name": self.name}


@_register
class OneCycle(tf.keras.optimizers.schedules.LearningRateSchedule):
    """FasTrCaps' one-cycle policy (after Smith's): linear up, linear down, then an annealing tail.

    `lr0 -> 10 lr0` over the first 45% of the steps, `10 lr0 -> lr0` up to 90%, then
    `lr0 -> lr0 / 10` at the last step, as in the authors' `one_cycle_policy`. After
    `total_steps` it stays at `lr0 / 10` (the authors' formula would keep falling).

    Args:
      initial_learning_rate: lr0 (> 0); the peak is 10 lr0.
      total_steps: optimizer steps of the whole training (> 0).
    """

    PEAK_FACTOR = 10.0
    PEAK_AT, END_OF_CYCLE = 0.45, 0.9

    def __init__(self, initial_learning_rate, total_steps, name=None):
        super().__init__()
        self.initial_learning_rate = _checks.positive_number(
            "OneCycle", "initial_learning_rate", initial_learning_rate)
        self.total_steps = _checks.positive_int("OneCycle", "total_steps", total_steps)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "OneCycle"):
            lr0, peak = self.initial_learning_rate, self.PEAK_FACTOR * self.initial_learning_rate
            s = tf.cast(step, tf.float32)
            total = float(self.total_steps)
            up_end, down_end = self.PEAK_AT * total, self.END_OF_CYCLE * total
            up = lr0 + (peak - lr0) * s / up_end
            down = peak - (peak - lr0) * (s - up_end) / (down_end - up_end)
            tail = lr0 - (lr0 - lr0 / 10.0) * (s - down_end) / (total - down_end)
            lr = tf.where(s <= up_end, up, tf.where(s <= down_end, down, tail))
            return tf.maximum(lr, lr0 / 10.0)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "total_steps": self.total_steps, "name": self.name}


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Writes the learning rate of each epoch into the logs: `lr` (first step) and `lr_end` (last).

    With a per-step schedule one number cannot describe an epoch, so both ends are logged; with
    a constant learning rate they are equal. Put it before `CSVLogger` in the callback list.

    Args:
      schedule: the optimizer's `LearningRateSchedule` or float; by default read from the
        optimizer's config when training starts.
    """

    def __init__(self, schedule=None):
        super().__init__()
        self.schedule = schedule

    def on_train_begin(self, logs=None):
        if self.schedule is None:
            value = self.model.optimizer.get_config()["learning_rate"]
            self.schedule = (tf.keras.optimizers.schedules.deserialize(value)
                             if isinstance(value, dict) else float(value))

    def _at(self, step):
        if isinstance(self.schedule, tf.keras.optimizers.schedules.LearningRateSchedule):
            return float(self.schedule(step))
        return float(self.schedule)

    def on_epoch_begin(self, epoch, logs=None):
        self._first = self._at(self.model.optimizer.iterations)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self._first
            logs["lr_end"] = self._at(tf.maximum(self.model.optimizer.iterations - 1, 0))
