"""The training policies FasTrCaps compares (Marchisio et al., 2020), by name.

Learning-rate policies (`learning_rate_schedule`), all per optimizer step, with `learning_rate`
the largest rate of each (the authors' plots peak at 1e-3 for every cyclic policy):

| name | learning rate |
|---|---|
| `epoch_decay` | `learning_rate * lr_decay ** epoch`, constant within an epoch (CapsNet-Keras' recipe: 0.9 per epoch; `kcaps train`'s default) |
| `fixed` | `learning_rate` throughout (the paper's baseline: Adam 1e-3) |
| `exp_decay` | `learning_rate * 0.96 ** (step / decay_steps)`; by default `decay_steps` makes the rate reach `learning_rate / 10` at the end, as in the paper's figure |
| `one_cycle` | `OneCycle(learning_rate / 10)`: up to `learning_rate` at 45%, back at 90%, `/ 10` at the end |
| `warm_restarts` | `CosineRestarts(learning_rate / 10, learning_rate)`, one cycle per epoch |
| `warm_adabatch` | `CosineRestarts(learning_rate / 10, learning_rate)`, one cycle over the warm epochs and one over the rest: WarmAdaBatch's learning rate |

Batch policies (`batch_size_schedule`): `fixed` (`batch_size` throughout) and `adabatch`
(`warm_batch_size` for `warm_epochs` epochs, then `adabatch_size`; the paper: 1 for 3 epochs, then
16). WarmAdaBatch is `warm_adabatch` + `adabatch` (`warm_adabatch()` builds both).

Cycle lengths and totals are counted in optimizer steps from the dataset size and the batch size
of every epoch, never from MNIST's 60,000 (the authors' code hard-codes `60000 * 3` and
`97 * 3750`).

Choices where the code leaves a gap: the authors' WarmAdaBatch sets `lr_max = 10 * lr_min` from
its `--lr` flag without saying which value the paper used; kcaps takes `lr_max = learning_rate`
(1e-3, the baseline's rate and the peak of their plotted policies). The code's `--decay-steps`
default (4,000 steps, a 13% decay over 30 MNIST epochs at batch 128) does not match the paper's
figure (a tenfold decay over 30 epochs), so the figure is followed.

>>> import kcaps
>>> lr, batches = kcaps.policies.warm_adabatch(num_examples=8000, epochs=10)
>>> lr.cycle_steps                       # 3 epochs x 8,000 steps, then 7 epochs x 500 steps
[24000, 3500]
>>> [batches.batch_size(e) for e in (0, 2, 3, 9)]
[1, 1, 16, 16]
"""
import math

import tensorflow as tf

from kcaps import _checks, lr_schedules
from kcaps.adaptive_batch import BatchSizeSchedule
from kcaps.registry import Registry

# name -> `(learning_rate, steps of each epoch, **options) -> learning rate`; each policy
# takes the options of `learning_rate_schedule` it uses and ignores the others
LR_POLICIES = Registry("learning-rate policy", "learning-rate policies", allow_callables=False)
# name -> `(batch_size, warm_epochs, warm_batch_size, adabatch_size) -> BatchSizeSchedule`
BATCH_POLICIES = Registry("batch policy", "batch policies", allow_callables=False)
EXP_DECAY_RATE = 0.96  # the authors' `--decay-rate`
LR_MIN_FACTOR = 0.1  # lr_min = lr_max / 10 in every cyclic policy of the paper


@BATCH_POLICIES.register("fixed")
def _fixed_batch(batch_size, warm_epochs, warm_batch_size, adabatch_size):
    return BatchSizeSchedule([batch_size])


@BATCH_POLICIES.register("adabatch")
def _adabatch(batch_size, warm_epochs, warm_batch_size, adabatch_size):
    return BatchSizeSchedule.warm(warm_epochs, warm_batch_size, adabatch_size)


def batch_size_schedule(policy="fixed", batch_size=128, warm_epochs=3, warm_batch_size=1,
                        adabatch_size=16):
    """A `BatchSizeSchedule` by policy name (`"fixed"` or `"adabatch"`)."""
    return BATCH_POLICIES.get(policy)(batch_size, warm_epochs, warm_batch_size, adabatch_size)


def learning_rate_schedule(policy, learning_rate, batch_schedule, num_examples, epochs,
                           warm_epochs=3, decay_steps=None, lr_decay=0.9):
    """The learning rate of a named policy, as a float or a `LearningRateSchedule`.

    Args:
      policy: one of `LR_POLICIES` (table in the module doc).
      learning_rate: the largest learning rate of the policy (> 0).
      batch_schedule: the `BatchSizeSchedule` of the run (steps per epoch come from it).
      num_examples: training examples per epoch.
      epochs: epochs of the whole run.
      warm_epochs: epochs of the first cycle of `warm_adabatch`.
      decay_steps: `exp_decay` steps per factor 0.96 (default: a tenfold decay over the run).
      lr_decay: `epoch_decay` factor per epoch, in (0, 1].
    """
    build = LR_POLICIES.get(policy)
    learning_rate = _checks.positive_number(policy, "learning_rate", learning_rate)
    epochs = _checks.positive_int(policy, "epochs", epochs)
    num_examples = _checks.positive_int(policy, "num_examples", num_examples)
    per_epoch = [batch_schedule.steps_per_epoch(e, num_examples) for e in range(epochs)]
    return build(learning_rate, per_epoch, warm_epochs=warm_epochs, decay_steps=decay_steps,
                 lr_decay=lr_decay)


@LR_POLICIES.register("epoch_decay")
def _epoch_decay(learning_rate, per_epoch, lr_decay=0.9, **_options):
    """`learning_rate * lr_decay ** epoch` on every step of an epoch (epochs of any length)."""
    if not 0 < lr_decay <= 1:
        raise ValueError(f"epoch_decay: `lr_decay` must be in (0, 1], got {lr_decay!r}")
    ends = [sum(per_epoch[:e + 1]) - 1 for e in range(len(per_epoch) - 1)]  # last step of each
    if not ends:
        return learning_rate
    return tf.keras.optimizers.schedules.PiecewiseConstantDecay(
        ends, [learning_rate * lr_decay ** e for e in range(len(per_epoch))])


@LR_POLICIES.register("fixed")
def _fixed(learning_rate, per_epoch, **_options):
    return learning_rate


@LR_POLICIES.register("exp_decay")
def _exp_decay(learning_rate, per_epoch, decay_steps=None, **_options):
    if decay_steps is None:  # 0.96 ** (total / decay_steps) = 1 / 10
        decay_steps = sum(per_epoch) * math.log(EXP_DECAY_RATE) / math.log(LR_MIN_FACTOR)
    decay_steps = _checks.positive_number("exp_decay", "decay_steps", decay_steps)
    return tf.keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps, EXP_DECAY_RATE)


@LR_POLICIES.register("one_cycle")
def _one_cycle(learning_rate, per_epoch, **_options):
    return lr_schedules.OneCycle(learning_rate * LR_MIN_FACTOR, sum(per_epoch))


@LR_POLICIES.register("warm_restarts")
def _warm_restarts(learning_rate, per_epoch, **_options):
    return lr_schedules.CosineRestarts(learning_rate * LR_MIN_FACTOR, learning_rate, per_epoch)


@LR_POLICIES.register("warm_adabatch")
def _warm_adabatch(learning_rate, per_epoch, warm_epochs=3, **_options):
    warm_epochs = _checks.positive_int("warm_adabatch", "warm_epochs", warm_epochs)
    cycles = [sum(per_epoch[:warm_epochs]), sum(per_epoch[warm_epochs:])]
    return lr_schedules.CosineRestarts(learning_rate * LR_MIN_FACTOR, learning_rate,
                                    [c for c in cycles if c > 0])


def warm_adabatch(num_examples, epochs, learning_rate=1e-3, warm_epochs=3, warm_batch_size=1,
                  batch_size=16):
    """WarmAdaBatch: `(learning-rate schedule, BatchSizeSchedule)` as the authors' code runs it.

    Batch size `warm_batch_size` (1) for `warm_epochs` (3) epochs, then `batch_size` (16); a cosine
    learning rate per step from `learning_rate` down to `learning_rate / 10`, whose first cycle
    spans the warm epochs and restarts exactly at the batch switch, the second spanning the rest.
    Train with an `AdaptiveBatchDataset` and an `AdaptiveBatchSize` callback.
    """
    batches = batch_size_schedule("adabatch", warm_epochs=warm_epochs,
                                  warm_batch_size=warm_batch_size, adabatch_size=batch_size)
    lr = learning_rate_schedule("warm_adabatch", learning_rate, batches, num_examples, epochs,
                                warm_epochs=warm_epochs)
    return lr, batches
