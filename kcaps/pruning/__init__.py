"""Pruning of capsule networks: tfmot magnitude/2:4 sparsity, and structured channel pruning.

Two kinds of pruning, used in a plain `model.fit`:

- **Magnitude and m-by-n sparsity with tfmot.** Every kcaps layer is a tfmot `PrunableLayer`,
  so `tfmot.sparsity.keras.prune_low_magnitude(model, ...)` wraps a whole kcaps model (with
  `ConstantSparsity`, `PolynomialDecay` or `sparsity_m_by_n=(2, 4)`), it trains with the
  `UpdatePruningStep` and `PruningSummaries` callbacks, and `strip_pruning` returns the same
  model class with the zeros in its weights. `sparsity_report` measures them per layer.
- **Structured (channel) pruning that shrinks the network** (Renzulli and Grangetto, "Towards
  Efficient Capsule Networks"; Sahu and Altahhan, "Mitigating Vanishing Activations in Deep
  CapsNets Using Channel Pruning"): `prune_channels` ranks backbone channels, capsule types and
  capsules (`criteria`: L1 norm, CHIP, activity) and rebuilds a physically smaller model
  (`surgery.shrink`); `IterativeChannelPruning` does it gradually during `fit` with masks;
  `kcaps.losses.ChannelCorrelationLoss` is Sahu and Altahhan's CCM loss, which makes channels
  redundant before pruning.

>>> import kcaps, tensorflow_model_optimization as tfmot
>>> model = kcaps.models.small_capsnet()
>>> pruned = tfmot.sparsity.keras.prune_low_magnitude(
...     model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
>>> type(pruned).__name__
'CapsuleModel'
"""
from kcaps.pruning.criteria import CRITERIA, chip_scores, l1_scores, unit_scores
from kcaps.pruning.report import count_flops, has_m_by_n, sparsity_report, summarize
from kcaps.pruning.iterative import IterativeChannelPruning
from kcaps.pruning.structure import prunable_units
from kcaps.pruning.surgery import apply_masks, masks, prune_channels, select, shrink

__all__ = [
    "CRITERIA", "IterativeChannelPruning", "apply_masks", "chip_scores", "count_flops",
    "has_m_by_n", "l1_scores", "masks", "prunable_units", "prune_channels", "select", "shrink",
    "sparsity_report", "summarize", "unit_scores",
]
