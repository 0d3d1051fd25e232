"""Argument checks that fail at construction or build time with the bad value in the message."""
import math

import tensorflow as tf



def positive_int(owner, field, value):
    """Return `value` as int, or raise ValueError naming `owner.field` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{field}` must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(owner, field, value):
    """Return `value` as int, or raise ValueError naming `owner.field` unless it is an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: `{field}` must be an integer >= 0, got {value!r}")
    return int(value)


def positive_number(owner, field, value):
    """Return `value` as float, or raise ValueError naming `owner.field` unless finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{owner}: `{field}` must be a positive number, got {value!r}")
    return float(value)


def capsule_input_shape(owner, input_shape):
    """Check a `(batch, num_capsules, capsule_dim)` shape and return `(num_capsules, capsule_dim)`."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{owner}: expected input capsules of shape (batch, num_capsules, capsule_dim), "
            f"got a rank-{len(shape)} input of shape {shape}"
        )
    if shape[1] is None or shape[2] is None:
        raise ValueError(
            f"{owner}: the number of input capsules and their dimension must be known when the "
            f"layer is built, got input shape {shape}"
        )
    return int(shape[1]), int(shape[2])


def fused_gradient(owner, gradient, *tensors):
    """Whether the hand-written gradient applies: `gradient == "fused"` and `tensors` all float32
    or all float64 (otherwise TensorFlow's autodiff is used). ValueError naming `owner` unless
    `gradient` is "fused" or "autodiff"."""
    if gradient not in ("fused", "autodiff"):
        raise ValueError(f"{owner}: gradient must be 'fused' or 'autodiff', got {gradient!r}")
    dtypes = {t.dtype for t in tensors}
    return gradient == "fused" and len(dtypes) == 1 and dtypes <= {tf.float32, tf.float64}
