"""kcaps.lr_schedules: FasTrCaps' learning-rate schedules against NumPy references; configs."""
import math

import pytest
import tensorflow as tf

from kcaps.adaptive_batch import BatchSizeSchedule
from kcaps.lr_schedules import CosineRestarts, OneCycle


def numpy_cosine_restarts(step, lr_min, lr_max, cycles):
    """SGDR written out: find the cycle of `step` (the last one repeats), then the cosine."""
    start = 0
    for length in cycles[:-1]:
        if step < start + length:
            t, period = step - start, length
            break
        start += length
    else:
        t, period = (step - start) % cycles[-1], cycles[-1]
    return lr_min + (lr_max - lr_min) * 0.5 * (1 + math.cos(math.pi * t / period))


def numpy_one_cycle(step, lr0, total):
    """The authors' `one_cycle_policy`, transcribed (clamped at lr0 / 10 after the end)."""
    tsoc = 0.9 * total
    if step <= 0.9 * total / 2:
        lr = 9 * lr0 * step / (tsoc / 2) + lr0
    elif step > 0.9 * total:
        lr = 0.9 * lr0 * (step - total) / (tsoc - total) + lr0 / 10
    else:
        lr = -9 * lr0 * (step - tsoc / 2) / (tsoc / 2) + 10 * lr0
    return max(lr, lr0 / 10)


def test_cosine_restarts_matches_numpy_and_repeats_the_last_cycle():
    schedule = CosineRestarts(1e-4, 1e-3, [5, 7])
    for step in range(40):
        assert float(schedule(step)) == pytest.approx(
            numpy_cosine_restarts(step, 1e-4, 1e-3, [5, 7]), rel=1e-5)
    assert float(schedule(5)) == pytest.approx(1e-3) and float(schedule(12)) == pytest.approx(1e-3)


def test_one_cycle_matches_the_authors_formula():
    schedule = OneCycle(1e-4, 200)
    for step in range(0, 230, 3):
        assert float(schedule(step)) == pytest.approx(numpy_one_cycle(step, 1e-4, 200), rel=1e-4)
    assert float(schedule(90)) == pytest.approx(1e-3)  # the peak, 10 lr0 at 45%


def test_schedules_round_trip_their_config():
    for schedule in (CosineRestarts(1e-4, 1e-3, [7, 9]), OneCycle(1e-4, 50)):
        clone = tf.keras.optimizers.schedules.deserialize(
            tf.keras.optimizers.schedules.serialize(schedule))
        assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
    batches = BatchSizeSchedule.warm(3, 1, 16)
    clone = tf.keras.utils.deserialize_keras_object(tf.keras.utils.serialize_keras_object(batches))
    assert clone.get_config() == batches.get_config()
