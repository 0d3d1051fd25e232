"""FasTrCaps' small decoder input: only the selected capsule, not the masked layer.

Sabour et al.'s decoder reads all class capsules with every capsule but one zeroed
(`num_classes * capsule_dim` inputs, `kcaps.layers.CapsuleMask`). FasTrCaps (Marchisio et al.,
2020) feeds the decoder the selected capsule alone - the true class's while training, the
longest at inference, as in the authors' `mask(..., small_decoder=True)` - so the first decoder
layer has `capsule_dim` inputs instead of `num_classes * capsule_dim`: for CapsNet,
`(10 - 1) * 16 * 512 = 73,728` fewer weights. The decoder no longer sees which class was selected.

>>> import kcaps, tensorflow as tf
>>> kcaps.models.capsnet(decoder="small").count_params()    # 8,215,568 - 73,728
8141840
"""
import tensorflow as tf

from kcaps import _checks, ops
from kcaps.layers import WeightlessPrunable


@tf.keras.utils.register_keras_serializable(package="kcaps")
class SelectedCapsule(tf.keras.layers.Layer, WeightlessPrunable):
    """The selected capsule of each example: the label's while training, the longest otherwise.

    Called on `capsules` or on `[capsules, labels]`; labels are class ids or one-hot (with
    multi-hot labels the selected capsules are summed).

    Input shape: `(batch, num_capsules, capsule_dim)` [and labels `(batch,)` or
    `(batch, num_capsules)`]. Output shape: `(batch, capsule_dim)`.
    """

    def build(self, input_shape):
        _checks.capsule_input_shape("SelectedCapsule", _capsule_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        labels = None
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    f"SelectedCapsule: expected [capsules, labels], got {len(inputs)} inputs")
            inputs, labels = inputs
        selection = ops.selected_capsules(inputs, labels, training)
        return tf.squeeze(tf.matmul(selection[:, tf.newaxis, :], inputs), axis=1)

    def compute_output_shape(self, input_shape):
        shape = _capsule_shape(input_shape)
        return tf.TensorShape([shape[0], shape[2]])


def _capsule_shape(input_shape):
    """The capsules' shape from `capsules_shape` or `[capsules_shape, labels_shape]`."""
    if isinstance(input_shape, (list, tuple)) and input_shape and not isinstance(
            input_shape[0], (int, type(None))):
        return tuple(tf.TensorShape(input_shape[0]))
    return tuple(tf.TensorShape(input_shape))
