"""Iterative channel pruning inside a plain `model.fit`, then one physical shrink at the end.

A Keras model cannot be replaced by a smaller one while `fit` runs (the optimizer, the compiled
train function and the callbacks all hold the model's variables). So the schedule works in two
steps, the way tfmot's magnitude pruning does:

1. during `fit`, every `every` epochs it raises each layer's pruning ratio by `step` (up to its
   target), ranks the units still alive with the chosen criterion, and *masks* the dropped ones:
   their filters, biases, batch-norm parameters and every weight that reads them are zeroed,
   and zeroed again after each training batch so the optimizer cannot revive them;
2. after `fit`, `schedule.shrink()` (or `kcaps.pruning.shrink(model, schedule.keep)`) rebuilds
   the physically smaller model from the masked one. For channels and capsule types the masked
   model and the shrunk model compute the same function, so no accuracy is lost in the shrink;
   for output capsules of a `CapsuleDense` the shrink removes their (zero) share of the routing
   softmax, a small change that a short fine-tune absorbs.

`logs["pruned_units"]` records the fraction of prunable units masked so far (CSV, TensorBoard).

>>> import kcaps
>>> schedule = IterativeChannelPruning(0.5, step=0.25, every=2)   # 25% after epoch 2, 50% after 4
"""
import tensorflow as tf

from kcaps import _checks
from kcaps.pruning import criteria, structure, surgery


class IterativeChannelPruning(tf.keras.callbacks.Callback):
    """Prune `step` more of each layer every `every` epochs, up to the target ratios.

    Args:
      target: `{layer: final ratio}` or one float for every prunable Conv2D and PrimaryCapsules
        layer (as in `kcaps.pruning.prune_channels`); ratios in [0, 1).
      step: ratio added at each pruning event, in (0, 1).
      every: epochs between pruning events (the first comes after `start_epoch + every` epochs).
      criterion: `"l1"`, `"chip"` or `"activity"` (`kcaps.pruning.criteria`).
      data: a batch of inputs for the data-driven criteria.
      start_epoch: epochs to train before the schedule starts counting.
    """

    def __init__(self, target, step=0.1, every=1, criterion="l1", data=None, start_epoch=0):
        super().__init__()
        if isinstance(target, dict):
            for name, ratio in target.items():
                surgery.check_ratio(name, ratio)
        else:
            surgery.check_ratio("every backbone layer", target)
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < 1:
            raise ValueError(f"IterativeChannelPruning: step must be in (0, 1), got {step!r}")
        _checks.positive_int("IterativeChannelPruning", "every", every)
        _checks.non_negative_int("IterativeChannelPruning", "start_epoch", start_epoch)
        if criteria.needs_data(criterion) and data is None:
            raise ValueError(f"IterativeChannelPruning: criterion {criterion!r} needs `data`")
        self.target, self.step, self.every = target, float(step), every
        self.criterion, self.data, self.start_epoch = criterion, data, start_epoch
        self.keep, self.ratios, self._masks, self._events = {}, {}, [], 0

    def on_train_begin(self, logs=None):
        # Check the whole plan at start-up: names, ratios and a final selection that leaves units.
        targets = surgery.layer_ratios(self.model, self.target)
        graph = structure.Graph(self.model)
        for name, ratio in targets.items():
            surgery.kept_count(graph.layer(name), name, ratio)
        structure.propagate(graph, {name: [0] for name in targets})
        self._targets = targets
        self._counts = {name: structure.unit_count(graph.layer(name)) for name in targets}
        if self.keep:
            self._masks = surgery.masks(self.model, self.keep)
            surgery.apply_masks(self._masks)

    def on_train_batch_end(self, batch, logs=None):
        if self._masks:
            surgery.apply_masks(self._masks)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1 - self.start_epoch
        if done >= self.every and done % self.every == 0:
            self._prune(done // self.every)
        if logs is not None:
            logs["pruned_units"] = self.pruned_fraction()

    def _prune(self, event):
        ratios = {name: min(target, event * self.step) for name, target in self._targets.items()}
        if ratios == self.ratios:
            return
        alive = self.keep or None
        self.keep = surgery.select(self.model, ratios, self.criterion, self.data, alive=alive)
        self.ratios = ratios
        self._masks = surgery.masks(self.model, self.keep)
        surgery.apply_masks(self._masks)

    def pruned_fraction(self):
        """Fraction of the scheduled layers' units masked so far."""
        counts = getattr(self, "_counts", {})
        total = sum(counts.values())
        kept = sum(len(self.keep.get(name, range(count))) for name, count in counts.items())
        return float(1.0 - kept / total) if total else 0.0

    def shrink(self, model=None):
        """The physically smaller model with the units kept so far (call after `fit`)."""
        model = model or self.model
        return surgery.shrink(model, self.keep) if self.keep else model
