"""Metrics on capsule lengths.

>>> import kcaps, numpy as np
>>> m = kcaps.metrics.CapsuleAccuracy()
>>> _ = m.update_state(np.array([1]), np.array([[0.1, 0.9]]))
>>> float(m.result())
1.0
"""
import tensorflow as tf

from kcaps import _checks, ops

_register = tf.keras.utils.register_keras_serializable(package="kcaps")


@_register
class CapsuleAccuracy(tf.keras.metrics.MeanMetricWrapper):
    """Top-1 accuracy of the longest capsule; labels may be class ids or one-hot."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(_top1_matches, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _top1_matches(y_true, y_pred):
    labels = tf.argmax(ops.one_hot_labels(y_true, y_pred.shape[-1]), axis=-1)
    return tf.cast(tf.equal(labels, tf.argmax(y_pred, axis=-1)), tf.float32)


@_register
class MultiDigitAccuracy(tf.keras.metrics.MeanMetricWrapper):
    """Both-digits-correct accuracy (Sabour et al.'s MultiMNIST metric).

    An example counts as correct when its `num_digits` longest capsules are exactly the classes
    of its multi-hot label (two-hot on MultiMNIST): both digits must be found, in any order.

    >>> import kcaps, numpy as np
    >>> m = kcaps.metrics.MultiDigitAccuracy()
    >>> labels = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    >>> scores = np.array([[0.1, 0.8, 0.7, 0.2], [0.9, 0.1, 0.8, 0.0]], np.float32)
    >>> _ = m.update_state(labels, scores)
    >>> float(m.result())   # the second example finds class 0 but picks 2 instead of 1
    0.5
    """

    def __init__(self, num_digits=2, name="both_digits_accuracy", dtype=None):
        self.num_digits = _checks.positive_int("MultiDigitAccuracy", "num_digits", num_digits)
        super().__init__(_top_k_set_matches, name=name, dtype=dtype, k=num_digits)

    def get_config(self):
        return {"num_digits": self.num_digits, "name": self.name, "dtype": self.dtype}


def _top_k_set_matches(y_true, y_pred, k):
    num_classes = y_pred.shape[-1]
    top = tf.math.top_k(y_pred, k=k).indices
    predicted = tf.reduce_sum(tf.one_hot(top, num_classes), axis=-2)  # k-hot
    labelled = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.float32)
    return tf.cast(tf.reduce_all(tf.equal(predicted, labelled), axis=-1), tf.float32)
