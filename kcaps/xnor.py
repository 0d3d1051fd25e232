"""XNOR-Net binarization as the XnODR / XnIDR authors (Sun, Fard, Mahoor) define it.

- `sign(x)`: +1 where x > 0 and -1 where x <= 0, with the hard-tanh straight-through gradient
  (1 where |x| <= 1, else 0). This is the authors' `binary_tanh`,
  `2 * round(hard_sigmoid(x)) - 1`, whose round(0.5) = 0 sends 0 to -1.
- `mean_abs(x, axis)`: the XNOR-Net scaling factor `mean |x|`, carrying no gradient (the
  authors' `_mean_abs` is wrapped in `stop_gradient`).

Why sign(0) = -1 and not larq's `ste_sign` convention (sign(0) = +1): in the authors' head the
XnODR layer reads capsules that have just been through a ReLU, so about half of its inputs are
exactly 0. With sign(0) = +1 every one of them would binarize to +1, and the binarized input
would carry no information at all; with sign(0) = -1 it is the step function `u > 0`.

`sign(x)` is computed as `-ste_sign(-x)`: larq's own quantizer on `-x`, negated. Larq Compute
Engine recognizes `ste_sign` and bit-packs its input, so a binary convolution of `ste_sign(-x)`
with negated weights is exactly a binary convolution of `sign(x)` (see
`kcaps.projections.XnorProjection`), with no approximation. larq is needed
(`pip install larq==0.14.0`).

>>> import kcaps, tensorflow as tf
>>> kcaps.xnor.sign(tf.constant([-2.0, 0.0, 0.5])).numpy()
array([-1., -1.,  1.], dtype=float32)
>>> kcaps.xnor.mean_abs(tf.constant([[-2.0, 0.0, 1.0]]), axis=-1).numpy()
array([1.], dtype=float32)
"""
import tensorflow as tf

from kcaps import _optional


def sign(x):
    """+1 where x > 0, -1 where x <= 0; straight-through gradient 1 where |x| <= 1, else 0."""
    return -_optional.larq().quantizers.ste_sign(-x)


def mean_abs(x, axis):
    """`mean(|x|)` over `axis`, without gradient (the XNOR-Net scaling factor)."""
    return tf.stop_gradient(tf.reduce_mean(tf.abs(x), axis=axis))
