"""kcaps.policies: FasTrCaps' named learning-rate and batch policies, counted from the dataset size."""
import pytest

import kcaps
from kcaps.adaptive_batch import BatchSizeSchedule


def test_warm_adabatch_restarts_exactly_at_the_batch_switch():
    lr, batches = kcaps.policies.warm_adabatch(num_examples=10, epochs=5, learning_rate=2e-3,
                                               warm_epochs=2, warm_batch_size=1, batch_size=4)
    assert [batches.batch_size(e) for e in range(5)] == [1, 1, 4, 4, 4]
    assert lr.cycle_steps == [2 * 10, 3 * 3]  # batch 4 over 10 examples: 3 steps, one short
    assert (lr.lr_min, lr.lr_max) == (pytest.approx(2e-4), 2e-3)
    assert float(lr(19)) < 3e-4 and float(lr(20)) == pytest.approx(2e-3)
    assert float(lr(28)) < 4e-4


def test_named_policies_count_steps_from_the_dataset_size():
    batches = kcaps.policies.batch_size_schedule("adabatch", warm_epochs=1, warm_batch_size=2,
                                                 adabatch_size=5)
    per_epoch = [batches.steps_per_epoch(e, 20) for e in range(4)]
    assert per_epoch == [10, 4, 4, 4]
    wr = kcaps.policies.learning_rate_schedule("warm_restarts", 1e-3, batches, 20, 4)
    assert wr.cycle_steps == per_epoch and wr.lr_min == pytest.approx(1e-4)
    ocp = kcaps.policies.learning_rate_schedule("one_cycle", 1e-3, batches, 20, 4)
    assert ocp.total_steps == 22 and ocp.initial_learning_rate == pytest.approx(1e-4)
    exp = kcaps.policies.learning_rate_schedule("exp_decay", 1e-3, batches, 20, 4)
    assert float(exp(22)) == pytest.approx(1e-4, rel=0.1)  # tenfold decay over the run
    assert float(exp(7)) == pytest.approx(1e-3 * 0.96 ** (7 / exp.decay_steps), rel=1e-5)
    assert kcaps.policies.learning_rate_schedule("fixed", 1e-3, batches, 20, 4) == 1e-3


def test_unknown_policies_list_the_valid_ones():
    with pytest.raises(ValueError, match="exp_decay, fixed, one_cycle"):
        kcaps.policies.learning_rate_schedule("cyclic", 1e-3, BatchSizeSchedule([4]), 10, 2)
    with pytest.raises(ValueError, match="adabatch, fixed"):
        kcaps.policies.batch_size_schedule("grow")


def test_epoch_decay_follows_the_epochs_of_an_adaptive_batch_size():
    batches = BatchSizeSchedule([2, 5], [1])  # 20 examples: 10 steps, then 4 per epoch
    lr = kcaps.policies.learning_rate_schedule("epoch_decay", 1e-3, batches, 20, 3, lr_decay=0.5)
    epoch_of_step = [0] * 10 + [1] * 4 + [2] * 4
    for step, epoch in enumerate(epoch_of_step):
        assert float(lr(step)) == pytest.approx(1e-3 * 0.5 ** epoch, rel=1e-6), step
    assert kcaps.policies.learning_rate_schedule("epoch_decay", 1e-3, batches, 20, 1) == 1e-3
    with pytest.raises(ValueError, match="`lr_decay`"):
        kcaps.policies.learning_rate_schedule("epoch_decay", 1e-3, batches, 20, 3, lr_decay=0)
