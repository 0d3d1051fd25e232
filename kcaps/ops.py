"""Pure tensor functions shared by the capsule layers.

>>> import kcaps, tensorflow as tf
>>> v = kcaps.ops.squash(tf.constant([[3.0, 4.0]]))
>>> round(float(tf.norm(v)), 4)   # |s| = 5  ->  25 / 26
0.9615
"""
import tensorflow as tf

from kcaps.registry import Registry

EPSILON = 1e-7

# Squash functions by name (`squash="..."` of every capsule layer). A callable that is not
# registered works in a layer, but its config cannot name it: register it to save the model.
SQUASHES = Registry("squash", plural="squash functions")


def _in_float32(x):
    """Squash and norms divide by small numbers: compute them in float32 under mixed precision."""
    x = tf.convert_to_tensor(x)
    return (tf.cast(x, tf.float32), x.dtype) if x.dtype in (tf.float16, tf.bfloat16) else (x, None)


def safe_norm(s, axis=-1, keepdims=False, epsilon=EPSILON):
    """Euclidean norm `sqrt(sum(s**2) + epsilon)`: finite value and gradient at s = 0."""
    s, dtype = _in_float32(s)
    norm = tf.sqrt(tf.reduce_sum(s * s, axis=axis, keepdims=keepdims) + epsilon)
    return norm if dtype is None else tf.cast(norm, dtype)


@SQUASHES.register("squash")
def squash(s, axis=-1, epsilon=EPSILON):
    """Sabour et al. (2017) squash: `v = |s|^2 / (1 + |s|^2) * s / |s|`.

    Short vectors shrink to almost zero length, long ones to just below one. `|s|` is the safe
    norm `sqrt(|s|^2 + epsilon)`, so the value and the gradient are finite at s = 0.

    Args:
      s: tensor of capsule vectors.
      axis: the axis that holds the vector components.
      epsilon: added under the square root.
    Returns:
      A tensor of the shape and dtype of `s`.
    """
    s, dtype = _in_float32(s)
    squared = tf.reduce_sum(s * s, axis=axis, keepdims=True)
    v = s * (squared / (1.0 + squared) * tf.math.rsqrt(squared + epsilon))
    return v if dtype is None else tf.cast(v, dtype)


@SQUASHES.register("approx")
def squash_approx(s, axis=-1, epsilon=EPSILON):
    """FasTrCaps' cheap squash: `v = s / 2` if `|s| <= 2`, else `s / |s|`.

    Piecewise linear, so it avoids the division of `|s|^2 / (1 + |s|^2)`; continuous at |s| = 2.
    """
    s, dtype = _in_float32(s)
    norm = tf.sqrt(tf.reduce_sum(tf.square(s), axis=axis, keepdims=True) + epsilon)
    v = tf.where(norm <= 2.0, s / 2.0, s / norm)
    return v if dtype is None else tf.cast(v, dtype)


@SQUASHES.register("efficient")
def squash_efficient(s, axis=-1, epsilon=EPSILON):
    """Efficient-CapsNet's squash (Mazzia et al., 2021): `v = (1 - 1 / exp(|s|)) s / |s|`.

    Like Sabour et al.'s it keeps the direction and maps the length into [0, 1), but it rises
    faster: `|v| = 1 - exp(-|s|)`, so `|s| = 1` already gives 0.63 (Sabour's: 0.5). Computed as
    `s / max(|s|, sqrt(epsilon)) * (1 - exp(-sqrt(|s|^2 + epsilon)))`, so the value (0) and the
    gradient (the identity, as the limit at 0) are finite at s = 0; the authors add 1e-20 to
    `exp(|s|)` and to `|s|` instead, which leaves the gradient at 0 undefined (NaN) in float32.

    >>> import kcaps, tensorflow as tf
    >>> v = kcaps.ops.squash_efficient(tf.constant([[3.0, 4.0]]))
    >>> round(float(tf.norm(v)), 4)   # 1 - exp(-5)
    0.9933
    """
    s, dtype = _in_float32(s)
    norm = tf.sqrt(tf.reduce_sum(s * s, axis=axis, keepdims=True) + epsilon)
    # The unit vector times the length, both in [-1, 1]: converted to int8, every intermediate
    # keeps a bounded range. `s * ((1 - exp(-|s|)) / |s|)` computes 1 / |s| on the way, whose
    # int8 range is set by the shortest capsules, so long ones rounded to length 0 (measured:
    # a class length of 0.998 became 0). l2_normalize converts to TFLite's L2_NORMALIZATION
    # (int8 in LiteRT and TFLite Micro); -1 * |s| rather than NEG, and EXP rather than expm1,
    # are builtin ops (TFLite Micro runs EXP in float: kcaps_tflite.float_islands).
    unit = tf.math.l2_normalize(s, axis=axis, epsilon=epsilon)
    v = unit * (1.0 - tf.exp(-1.0 * norm))
    return v if dtype is None else tf.cast(v, dtype)


def one_hot_labels(labels, num_classes, dtype=tf.float32):
    """Integer labels `(batch,)`/`(batch, 1)` or one/multi-hot `(batch, num_classes)` -> one-hot."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == num_classes and num_classes > 1:
        return tf.cast(labels, dtype)
    labels = tf.reshape(labels, [-1])
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=dtype)


def selected_capsules(capsules, labels=None, training=None):
    """One-hot `(batch, num_capsules)`: the label's capsule while training, else the longest.

    Sabour et al.'s mask and FasTrCaps' small decoder both select this way. With `labels`
    (class ids or one/multi-hot) and `training`, the labels select; otherwise, and always at
    inference, the capsule of largest length does.

    >>> import kcaps, tensorflow as tf
    >>> capsules = tf.constant([[[1.0, 0.0], [3.0, 4.0]]])
    >>> kcaps.ops.selected_capsules(capsules).numpy()
    array([[0., 1.]], dtype=float32)
    >>> kcaps.ops.selected_capsules(capsules, [0], training=True).numpy()
    array([[1., 0.]], dtype=float32)
    """
    num_capsules = capsules.shape[1]
    by_length = tf.one_hot(tf.argmax(safe_norm(capsules, axis=-1), axis=-1), num_capsules,
                           dtype=capsules.dtype)
    if labels is None:
        return by_length
    by_label = one_hot_labels(labels, num_capsules, capsules.dtype)
    return tf.keras.backend.in_train_phase(by_label, by_length, training=training)



def get_squash(identifier):
    """A squash function by name (`"squash"`, `"approx"`, `"efficient"`), or a callable as is."""
    return SQUASHES.get(identifier)
