"""Complexity of capsule networks: parameters, MACs and size, with capsule layers counted.

larq's profiler counts multiply-accumulates (MACs) only for the Conv and Dense classes it knows,
and a weight's bit width is its `precision` attribute (32 when absent). kcaps layers count their
own MACs: `CapsuleDense.macs()`, `PrimaryCapsules.macs()` and the projections' `macs()` return
`{bits: count}` per example (1 = binary, 32 = float). `ModelProfile(model)` is larq's
`ModelProfile` whose layer profiles take a layer's own count when it has one, and
`summary(model)` is `larq.models.summary` over it: capsule layers with their binary and float
MACs, and XnODR's kernel (a `QuantizedVariable` of precision 1) as 1-bit parameters. larq itself
is left as it is: `larq.models.summary` still counts only the layers larq knows.

`profile(model)` gives the figures of the XnODR paper's table: binary and float parameters,
binary and float MACs, and bytes at deployment precision.

>>> import kcaps, larq, tensorflow as tf
>>> x = tf.keras.Input((32, 8))
>>> y = kcaps.layers.CapsuleDense(10, 16, routing="xnodr", routing_iterations=3)(x)
>>> model = tf.keras.Model(x, y)
>>> figures = kcaps.complexity.profile(model)
>>> figures["binary_params"], figures["binary_macs"]   # 32 x 8 x 10 x 16 signs and products
(40960, 40960)
>>> figures["float_macs"]   # rescaling 2 x 5120, 3 weighted sums and 2 agreements of 5120 each
35840
"""
import functools

import numpy as np
import tensorflow as tf

from kcaps import _optional
from kcaps.models.capsule_model import unwrap

def layer_macs(layer):
    """`{bits: count}` MACs per example of a layer that counts its own (or wraps one), else None.

    Wrappers (tfmot's pruning wrapper, `tf.keras.layers.Wrapper`) are looked through.
    """
    layer = unwrap(layer)
    if callable(getattr(layer, "macs", None)):
        return {int(bits): int(count) for bits, count in layer.macs().items()}
    return None


@functools.lru_cache(maxsize=None)
def _profile_classes(larq):
    """`(CapsuleLayerProfile, CapsuleModelProfile)`: larq's profiles, counting own MACs."""

    class CapsuleLayerProfile(larq.models.LayerProfile):
        """larq's `LayerProfile`, taking the MAC counts of layers that report their own."""

        def __init__(self, layer):
            super().__init__(layer)
            self._own_macs = layer_macs(layer)
            if self._own_macs is not None:
                self.op_profiles = [
                    larq.models.OperationProfile(n=count, precision=bits, op_type="mac")
                    for bits, count in sorted(self._own_macs.items()) if count]

        def op_count(self, op_type=None, precision=None):
            if self._own_macs is None:
                return super().op_count(op_type, precision)
            if op_type != "mac":
                raise ValueError("Currently only counting of MAC-operations is supported.")
            return sum(op.n for op in self.op_profiles if precision in (None, op.precision))

    class CapsuleModelProfile(larq.models.ModelProfile):
        """larq's `ModelProfile` with a `CapsuleLayerProfile` per layer (nested models too)."""

        def __init__(self, model):  # larq's __init__ builds only larq's own LayerProfiles
            self.name = model.name
            self.layer_profiles = [
                CapsuleModelProfile(layer) if isinstance(layer, tf.keras.Model)
                else CapsuleLayerProfile(layer) for layer in model.layers]

    return CapsuleLayerProfile, CapsuleModelProfile


def ModelProfile(model):  # noqa: N802  (larq's class name: a drop-in for larq.models.ModelProfile)
    """larq's `ModelProfile` of `model`, with kcaps' layers counting their own MACs."""
    return _profile_classes(_optional.larq())[1](model)


def summary(model, print_fn=None, include_macs=True):
    """`larq.models.summary(model)`, with kcaps' layers counting their own MACs."""
    larq = _optional.larq()
    if not model.built:
        raise ValueError(f"summary: model {model.name!r} is not built")
    print_fn = print_fn or print
    model_profile = ModelProfile(model)
    print_fn(larq.models.LayersTable(model_profile.generate_table(),
                                     title=f"{model.name} stats").table)
    print_fn(larq.models.SummaryTable(model_profile.generate_summary(include_macs),
                                      title=f"{model.name} summary").table)


def profile(model):
    """The figures of the XnODR paper's table for a built Keras model.

    Returns a dict:
      `params`, `trainable_params`: all weights, and the trainable ones (as `model.summary()`);
      `binary_params`, `float_params`: weights of precision 1 (larq `QuantizedVariable`s) and
        the others;
      `binary_macs`, `float_macs`: MACs per example, from larq's profiler with kcaps' layers
        counting their own;
      `deployment_bytes`: weights at their precision as larq's "Model size" counts them (1 bit
        for binary weights; BatchNorm as two vectors, as folded for inference), plus the float
        XNOR-Net scaling factors that binarized layers store (`scaling_factors()`).
    """
    if not model.built:
        raise ValueError(f"profile: model {model.name!r} is not built")
    bits = [(int(np.prod(w.shape)), getattr(w, "precision", 32)) for w in model.weights]
    binary = sum(count for count, precision in bits if precision == 1)
    model_profile = ModelProfile(model)
    scaling = sum(m.scaling_factors() for m in model.submodules if hasattr(m, "scaling_factors"))
    return {
        "params": int(sum(count for count, _ in bits)),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "binary_params": int(binary),
        "float_params": int(sum(count for count, _ in bits) - binary),
        "binary_macs": int(model_profile.op_count("mac", 1)),
        "float_macs": int(model_profile.op_count("mac", 32)),
        "deployment_bytes": int(np.ceil((model_profile.memory + 32 * scaling) / 8)),
    }
