"""Metrics on capsule lengths.

>>> import kcaps, numpy as np
>>> m = kcaps.metrics.CapsuleAccuracy()
>>> _ = m.update_state(np.array([1]), np.array([[0.1, 0.9]]))
>>> float(m.result())
1.0
"""
import tensorflow as tf

from kcaps import ops

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
