"""The CCM loss: make a layer's channels correlated, so that pruning them later costs less.

Sahu and Altahhan train with a correlation-coefficient-matrix (CCM) term next to the margin
loss: the mean absolute Pearson correlation between the channel maps of a layer, averaged over
the batch, is *subtracted* from the loss with a weight lambda. Rewarding correlated channels
makes them redundant, and redundant channels are the ones CHIP removes with the least harm.

Definition used here (the paper's text was not readable; this follows its summary): for feature
maps `a` of shape `(batch, h, w, c)`, take the batch-averaged map of each channel
`m_c = mean_b a[b, :, :, c]` (h*w values), their Pearson correlation matrix R (c x c), and
`ccm = mean_{c != c'} |R[c, c']|`; the layer adds `-weight * ccm` to the model's losses and
reports `ccm` as the metric `<layer name>` (so it appears in the fit logs). A constant channel has
no defined correlation; a small epsilon in the standard deviations makes it count as 0.

>>> import kcaps, tensorflow as tf
>>> layer = ChannelCorrelationLoss(weight=0.1)
>>> layer(tf.random.normal([2, 5, 5, 4])).shape      # identity on the feature maps
TensorShape([2, 5, 5, 4])
"""
import tensorflow as tf
import tensorflow_model_optimization as tfmot


def channel_correlation(feature_maps, epsilon=1e-6):
    """Mean |Pearson correlation| between the batch-averaged channel maps, off the diagonal."""
    x = tf.cast(feature_maps, tf.float32)
    channels = x.shape[-1]
    maps = tf.reshape(tf.reduce_mean(x, axis=0), [-1, channels])  # (h*w, c)
    centered = maps - tf.reduce_mean(maps, axis=0, keepdims=True)
    std = tf.sqrt(tf.reduce_mean(tf.square(centered), axis=0) + epsilon)
    normalized = centered / std
    corr = tf.matmul(normalized, normalized, transpose_a=True) / tf.cast(tf.shape(maps)[0], x.dtype)
    off_diagonal = tf.reduce_sum(tf.abs(corr)) - tf.reduce_sum(tf.abs(tf.linalg.diag_part(corr)))
    return off_diagonal / float(channels * (channels - 1))


@tf.keras.utils.register_keras_serializable(package="kcaps")
class ChannelCorrelationLoss(tf.keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Identity on feature maps that adds `-weight * channel_correlation(maps)` to the loss.

    Place it after the activation of the layer whose channels will be pruned. It has no weights,
    passes channel pruning through, and converts to nothing (it is an identity at inference).

    Input shape: `(batch, height, width, channels)`, channels >= 2. Output shape: the same.
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

    def get_prunable_weights(self):
        return []

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight)
        return config
