"""Losses: Sabour et al.'s margin loss and scaled reconstruction error (2017); Sahu and
Altahhan's channel-correlation (CCM) loss.

>>> import kcaps, tensorflow as tf
>>> loss = kcaps.losses.MarginLoss()
>>> round(float(loss(tf.constant([1]), tf.constant([[0.1, 0.9]]))), 6)   # perfect -> 0
0.0
"""
import tensorflow as tf

from kcaps import ops
from kcaps.layers import WeightlessPrunable

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


def channel_correlation(feature_maps, epsilon=1e-6):
    """Mean |Pearson correlation| between the batch-averaged channel maps, off the diagonal.

    For feature maps `a` of shape `(batch, h, w, c)`: the batch-averaged map of each channel
    `m_c = mean_b a[b, :, :, c]` (h*w values), their Pearson correlation matrix R (c x c), and
    `mean_{c != c'} |R[c, c']|`. A constant channel has no defined correlation; a small epsilon in
    the standard deviations makes it count as 0.
    """
    x = tf.cast(feature_maps, tf.float32)
    channels = x.shape[-1]
    maps = tf.reshape(tf.reduce_mean(x, axis=0), [-1, channels])  # (h*w, c)
    centered = maps - tf.reduce_mean(maps, axis=0, keepdims=True)
    std = tf.sqrt(tf.reduce_mean(tf.square(centered), axis=0) + epsilon)
    normalized = centered / std
    corr = tf.matmul(normalized, normalized, transpose_a=True) / tf.cast(tf.shape(maps)[0], x.dtype)
    off_diagonal = tf.reduce_sum(tf.abs(corr)) - tf.reduce_sum(tf.abs(tf.linalg.diag_part(corr)))
    return off_diagonal / float(channels * (channels - 1))


@_register
class ChannelCorrelationLoss(tf.keras.layers.Layer, WeightlessPrunable):
    """Identity on feature maps that adds `-weight * channel_correlation(maps)` to the loss.

    Sahu and Altahhan's CCM term: make a layer's channels correlated, so that pruning them later
    costs less. They train with the mean absolute Pearson correlation between the channel maps
    of a layer (`channel_correlation`; the paper's text was not readable, this follows its
    summary) *subtracted* from the margin loss with a weight lambda. Rewarding correlated
    channels makes them redundant, and redundant channels are the ones CHIP removes with the
    least harm. The layer reports `ccm` as the metric `<layer name>` (so it appears in the fit
    logs).

    Place it after the activation of the layer whose channels will be pruned. It has no weights,
    passes channel pruning through, and converts to nothing (it is an identity at inference).

    Input shape: `(batch, height, width, channels)`, channels >= 2. Output shape: the same.

    >>> import kcaps, tensorflow as tf
    >>> layer = kcaps.losses.ChannelCorrelationLoss(weight=0.1)
    >>> layer(tf.random.normal([2, 5, 5, 4])).shape      # identity on the feature maps
    TensorShape([2, 5, 5, 4])
    """

    def __init__(self, weight=0.1, **kwargs):
        super().__init__(**kwargs)
        if not weight >= 0:
            raise ValueError(f"ChannelCorrelationLoss: weight must be >= 0, got {weight!r}")
        self.weight = float(weight)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] is None or shape[-1] < 2:
            raise ValueError(
                "ChannelCorrelationLoss: expected feature maps (batch, height, width, channels) "
                f"with at least 2 channels, got shape {shape}")
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training:
            ccm = channel_correlation(inputs)
            self.add_loss(-self.weight * ccm)
            self.add_metric(ccm, name=self.name)
        return inputs

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight)
        return config
