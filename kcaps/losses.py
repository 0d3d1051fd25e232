"""Losses of Sabour et al. (2017): the margin loss and the scaled reconstruction error.

>>> import kcaps, tensorflow as tf
>>> loss = kcaps.losses.MarginLoss()
>>> round(float(loss(tf.constant([1]), tf.constant([[0.1, 0.9]]))), 6)   # perfect -> 0
0.0
"""
import tensorflow as tf

from kcaps import ops

_register = tf.keras.utils.register_keras_serializable(package="kcaps")


@_register
class MarginLoss(tf.keras.losses.Loss):
    """`L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2`, summed over classes.

    `y_true` may be integer class ids (`(batch,)` or `(batch, 1)`) or one-hot / multi-hot
    `(batch, num_classes)` (MultiMNIST's two-hot labels). `y_pred` are capsule lengths
    `(batch, num_classes)`. Returns one value per example (Keras averages over the batch).
    """

    def __init__(self, m_plus=0.9, m_minus=0.1, down_weight=0.5, name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= m_minus < m_plus <= 1.0:
            raise ValueError(
                f"MarginLoss: need 0 <= m_minus < m_plus <= 1, got m_minus={m_minus}, m_plus={m_plus}")
        if down_weight < 0:
            raise ValueError(f"MarginLoss: down_weight must be >= 0, got {down_weight}")
        self.m_plus, self.m_minus, self.down_weight = float(m_plus), float(m_minus), float(down_weight)

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        t = ops.one_hot_labels(y_true, y_pred.shape[-1], y_pred.dtype)
        present = t * tf.square(tf.nn.relu(self.m_plus - y_pred))
        absent = self.down_weight * (1.0 - t) * tf.square(tf.nn.relu(y_pred - self.m_minus))
        return tf.reduce_sum(present + absent, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(m_plus=self.m_plus, m_minus=self.m_minus, down_weight=self.down_weight)
        return config


@_register
class ReconstructionLoss(tf.keras.losses.Loss):
    """`scale * sum((x - x_reconstructed)^2)` over all pixels of each example (scale 0.0005).

    Sabour et al. scale the sum of squared errors by 0.0005 so that it does not dominate the
    margin loss. Returns one value per example.
    """

    def __init__(self, scale=0.0005, name="reconstruction_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if scale < 0:
            raise ValueError(f"ReconstructionLoss: scale must be >= 0, got {scale}")
        self.scale = float(scale)

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(tf.reshape(y_true, tf.shape(y_pred)), tf.float32)
        error = tf.square(y_true - y_pred)
        return self.scale * tf.reduce_sum(tf.reshape(error, [tf.shape(error)[0], -1]), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config
