"""kcaps.adaptive_batch: batch-size schedules and the dataset that changes its batch size between epochs."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps.adaptive_batch import AdaptiveBatchDataset, AdaptiveBatchSize, BatchSizeSchedule
from kcaps.lr_schedules import CosineRestarts, OneCycle
from conftest import _examples


@pytest.mark.parametrize("make,field", [
    (lambda: CosineRestarts(0.0, 1e-3, [10]), "lr_min"),
    (lambda: CosineRestarts(1e-4, -1e-3, [10]), "lr_max"),
    (lambda: CosineRestarts(1e-4, 1e-3, [10, 0]), "cycle_steps"),
    (lambda: CosineRestarts(1e-4, 1e-3, []), "cycle_steps"),
    (lambda: OneCycle(1e-4, 0), "total_steps"),
    (lambda: OneCycle(-1.0, 10), "initial_learning_rate"),
    (lambda: BatchSizeSchedule([16, 0], [3]), "batch_sizes"),
    (lambda: BatchSizeSchedule([1, 16], [0]), "boundaries"),
    (lambda: BatchSizeSchedule([1, 2, 3], [4, 4]), "boundaries"),
    (lambda: BatchSizeSchedule.warm(warm_epochs=0), "warm_epochs"),
    (lambda: AdaptiveBatchDataset(_examples(np.zeros((4, 2)), np.zeros(4)), 0), "batch_size"),
    (lambda: kcaps.policies.learning_rate_schedule(
        "warm_restarts", 0.0, BatchSizeSchedule([4]), 10, 2), "learning_rate"),
    (lambda: kcaps.policies.learning_rate_schedule(
        "exp_decay", 1e-3, BatchSizeSchedule([4]), 10, 2, decay_steps=0), "decay_steps"),
])
def test_bad_schedule_parameters_raise_naming_the_field(make, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        make()


def test_batch_size_schedule_bookkeeping():
    batches = BatchSizeSchedule([1, 16, 32], [3, 5])
    assert [batches.batch_size(e) for e in range(7)] == [1, 1, 1, 16, 16, 32, 32]
    assert [batches.steps_per_epoch(e, 100) for e in (0, 3, 5)] == [100, 7, 4]
    assert batches.steps_before(5, 100) == 300 + 14
    assert [batches.epoch_at_step(s, 100) for s in (0, 299, 300, 306, 307, 314)] == \
        [0, 2, 3, 3, 4, 5]


def test_dataset_serves_every_example_once_per_iteration_at_the_current_size():
    x = np.arange(10, dtype=np.float32)[:, None]
    data = AdaptiveBatchDataset(_examples(x, np.arange(10)).shuffle(10, seed=1), batch_size=4)
    assert int(data.cardinality()) == 3 and data.num_examples == 10
    batches = [y.numpy() for _, y in data]
    assert [len(b) for b in batches] == [4, 4, 2]
    first_order = np.concatenate(batches)
    assert sorted(first_order) == list(range(10))
    data.batch_size = 1
    assert int(data.cardinality()) == 10 and data.element_spec[0].shape.as_list() == [None, 1]
    second = np.concatenate([y.numpy() for _, y in data])  # a new iterator: reshuffled
    assert sorted(second) == list(range(10)) and not np.array_equal(second, first_order)


def test_dataset_needs_single_examples_of_known_count():
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        AdaptiveBatchDataset(np.zeros((4, 2)), 2)
    unknown = _examples(np.zeros((4, 2)), np.zeros(4)).filter(lambda x, y: True)
    with pytest.raises(ValueError, match="known, finite"):
        AdaptiveBatchDataset(unknown, 2)
    with pytest.raises(ValueError, match="`data` must be an AdaptiveBatchDataset"):
        AdaptiveBatchSize(BatchSizeSchedule([2]), _examples(np.zeros((4, 2)), np.zeros(4)))
