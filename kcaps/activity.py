"""Capsule activity: how many capsules of each layer are inactive, and how long capsules are.

Deep capsule networks starve: in deeper capsule layers most capsules' activations (lengths) go
to zero (Mitterreiter et al., AAAI 2023; Everett et al., arXiv 2305.11178; Sahu and Altahhan,
arXiv 2410.16908). This module measures it on a held batch.

**Definition.** A capsule of a layer is *inactive* on a held batch when its length |v| stays
below `threshold` for every example of the batch; the layer's inactive fraction is the share of
its capsules that are inactive (for primary capsules every position x type is one capsule).
Sahu and Altahhan's threshold was not readable here; kcaps uses `threshold=0.01` by default:
the length of a capsule is the probability that its entity is present, and a capsule that never
reaches 1% on any held example never signals anything; through the squash, |v| < 0.01 means
|s| < 0.1, the quadratic regime (|v| ~ |s|^2) where the capsule's output and its gradient are
both ~100x smaller than those of a capsule of length ~0.5. The mean length over all capsules and
examples is recorded next to it, so other thresholds can be judged from the same run.

>>> import kcaps, numpy as np
>>> model = kcaps.models.small_capsnet()
>>> stats = capsule_activity(model, np.zeros([4, 28, 28, 1], np.float32))
>>> round(stats["class_capsules"]["inactive_fraction"], 2)    # a blank image: all silent
1.0
"""
import numpy as np
import tensorflow as tf

from kcaps.layers import CapsuleDense, PrimaryCapsules
from kcaps.models.capsule_model import probe, unwrap

DEFAULT_THRESHOLD = 0.01


def capsule_layers(model):
    """Names of the layers of `model` that output capsules (primary and routed capsule layers)."""
    return [layer.name for layer in model.layers
            if isinstance(unwrap(layer), (PrimaryCapsules, CapsuleDense))]


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"capsule activity: threshold must be a number > 0, got {threshold!r}")
    return float(threshold)


class _CapsuleOutputs:
    """The chosen capsule layers of a model, checked, and their capsule lengths on data."""

    def __init__(self, model, layers=None):
        names = capsule_layers(model) if layers is None else list(layers)
        available = capsule_layers(model)
        for name in names:
            if name not in available:
                raise ValueError(f"capsule activity: '{name}' is not a capsule layer of model "
                                 f"'{model.name}'; capsule layers: {available}")
        if not names:
            raise ValueError(f"capsule activity: model '{model.name}' has no capsule layers")
        self.model, self.names = model, names
        self.tensors = [model.get_layer(n).output for n in names]

    def lengths(self, data, batch_size=256):
        """`{name: (examples, capsules) lengths}`."""
        values = probe(self.model, self.tensors, data, batch_size)
        return {name: np.linalg.norm(value.astype(np.float64), axis=-1)
                for name, value in zip(self.names, values)}


def activity_from_lengths(lengths, threshold=DEFAULT_THRESHOLD):
    """Inactive fraction and mean length from `(examples, capsules)` capsule lengths."""
    lengths = np.asarray(lengths)
    inactive = np.max(lengths, axis=0) < threshold
    return {"inactive_fraction": float(np.mean(inactive)),
            "mean_length": float(np.mean(lengths)),
            "inactive": inactive}


def capsule_activity(model, data, threshold=DEFAULT_THRESHOLD, layers=None, batch_size=256):
    """Per capsule layer: inactive fraction, mean length and the inactive mask, on `data`.

    Args:
      model: a Keras model with kcaps capsule layers (tfmot-wrapped layers are fine).
      data: a held batch of inputs (images).
      threshold: length below which a capsule that never exceeds it counts as inactive.
      layers: names of the capsule layers to measure (default: all).
    Returns:
      `{layer: {"inactive_fraction": float, "mean_length": float, "inactive": bool array}}`.
    """
    threshold = _check_threshold(threshold)
    probe = _CapsuleOutputs(model, layers)
    return {name: activity_from_lengths(values, threshold)
            for name, values in probe.lengths(data, batch_size).items()}


class CapsuleActivityMonitor(tf.keras.callbacks.Callback):
    """Records, each epoch, per capsule layer the inactive fraction and mean length.

    On a held batch (module doc for the definition), before training (epoch 0) and after each
    epoch. The values go into the epoch `logs` as `<layer>_inactive_fraction` and
    `<layer>_mean_length` - so `CSVLogger`, `History` and Keras's `TensorBoard` callback record
    them: put this monitor *before* those callbacks in the list -, into TensorBoard scalars of
    its own under `log_dir` (if given), and into `history`
    (`{layer: {"epoch": [...], "inactive_fraction": [...], "mean_length": [...]}}`), from which
    the application draws its plots (`kcaps_training.plots.plot_capsule_activity`).

    Args:
      data: the held batch of inputs.
      threshold: the inactivity threshold on capsule lengths (default 0.01, module doc).
      layers: capsule layer names to follow (default: all).
      log_dir: directory for TensorBoard scalars `capsule_activity/<layer>/...`.
    """

    def __init__(self, data, threshold=DEFAULT_THRESHOLD, layers=None, log_dir=None,
                 batch_size=256):
        super().__init__()
        if data is None or len(data) == 0:
            raise ValueError("CapsuleActivityMonitor: `data` must be a non-empty batch of inputs")
        self.data, self.threshold = data, _check_threshold(threshold)
        self.layers, self.log_dir = layers, log_dir
        self.batch_size = batch_size
        self.history = {}  # {layer: {"epoch": [...], "inactive_fraction": [...], "mean_length": [...]}}

    def on_train_begin(self, logs=None):
        self._probe = _CapsuleOutputs(self.model, self.layers)
        self._writer = tf.summary.create_file_writer(self.log_dir) if self.log_dir else None
        if not self.history:  # the state before training, as epoch 0
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        stats = self._record(epoch + 1)
        if logs is not None:
            for name, values in stats.items():
                logs[f"{name}_inactive_fraction"] = values["inactive_fraction"]
                logs[f"{name}_mean_length"] = values["mean_length"]

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def _record(self, epoch):
        lengths = self._probe.lengths(self.data, self.batch_size)
        stats = {name: activity_from_lengths(v, self.threshold) for name, v in lengths.items()}
        for name, values in stats.items():
            record = self.history.setdefault(
                name, {"epoch": [], "inactive_fraction": [], "mean_length": []})
            record["epoch"].append(epoch)
            record["inactive_fraction"].append(values["inactive_fraction"])
            record["mean_length"].append(values["mean_length"])
            if self._writer is not None:
                with self._writer.as_default(step=epoch):
                    tf.summary.scalar(f"capsule_activity/{name}/inactive_fraction",
                                      values["inactive_fraction"])
                    tf.summary.scalar(f"capsule_activity/{name}/mean_length",
                                      values["mean_length"])
        return stats
