"""Projections: how a capsule layer turns input capsules u into prediction vectors u_hat.

`u_hat[j|i] = W[i, j] u[i]`: every (input capsule i, output capsule j) pair has its own
`capsule_dim x input_dim` matrix in Sabour et al. (2017). The variants here differ only in how W
is stored or applied, so every capsule layer and every routing algorithm reuses them:

- `DenseProjection`: one float matrix per pair (Sabour et al.); optionally shared across input
  capsules (FasTrCaps weight sharing).
- `XnorProjection`: the XnODR projection, inputs and weights binarized with XNOR-Net scaling.

Internally u_hat is laid out as `(batch, num_out, num_in, out_dim)`, the layout in which routing's
sums are batched matrix-vector products (see `kcaps.routing`). The projection is one batched
matmul over input capsules - no tiling of W over the batch - followed by one transpose.

>>> import kcaps, tensorflow as tf
>>> projection = kcaps.projections.DenseProjection(num_capsules=10, capsule_dim=16)
>>> projection(tf.zeros([4, 32, 8])).shape   # (batch, num_out, num_in, out_dim)
TensorShape([4, 10, 32, 16])
"""
import numpy as np
import tensorflow as tf

from kcaps import _checks, _optional, initializers

SHARING_MODES = ("type", "position")


def sharing_index(num_in, weight_sharing, capsule_types=None):
    """Map each input capsule to the index of the matrix it uses.

    Args:
      num_in: number of input capsules.
      weight_sharing: None (one matrix per input capsule), an int K (FasTrCaps' tiling: capsule i
        uses matrix `i mod K`), `"type"` (one matrix per primary-capsule type, shared over
        positions) or `"position"` (one matrix per position, shared over types).
      capsule_types: number of capsule types of the primary-capsule layer; needed by `"type"` and
        `"position"`. kcaps' `PrimaryCapsules` orders capsules position-major
        (`i = position * capsule_types + type`), so `"type"` is the tiling with K = capsule_types.
    Returns:
      An int32 numpy array of shape (num_in,), or None without sharing.
    """
    if weight_sharing is None:
        return None
    if weight_sharing in SHARING_MODES:
        if capsule_types is None or num_in % capsule_types:
            raise ValueError(
                f"weight_sharing={weight_sharing!r} needs `capsule_types` dividing the {num_in} input "
                f"capsules, got capsule_types={capsule_types!r}"
            )
        i = np.arange(num_in)
        return (i % capsule_types if weight_sharing == "type" else i // capsule_types).astype(np.int32)
    unique = _checks.positive_int("weight_sharing", "weight_sharing", weight_sharing)
    if unique > num_in:
        raise ValueError(f"weight_sharing={unique} unique matrices exceed the {num_in} input capsules")
    return (np.arange(num_in) % unique).astype(np.int32)


@tf.keras.utils.register_keras_serializable(package="kcaps")
class DenseProjection(tf.keras.layers.Layer):
    """Float prediction vectors `u_hat[j|i] = W[i, j] u[i]` with no bias (Sabour et al., 2017).

    The kernel has shape `(num_matrices, input_dim, num_capsules, capsule_dim)`, with
    `num_matrices = num_in` without weight sharing.

    Input shape: `(batch, num_in, input_dim)`.
    Output shape: `(batch, num_capsules, num_in, capsule_dim)` (the routing layout, module doc).
    """

    def __init__(self, num_capsules, capsule_dim, weight_sharing=None, capsule_types=None,
                 kernel_initializer=None, kernel_regularizer=None,
                 kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.num_capsules = _checks.positive_int(type(self).__name__, "num_capsules", num_capsules)
        self.capsule_dim = _checks.positive_int(type(self).__name__, "capsule_dim", capsule_dim)
        if weight_sharing is not None and weight_sharing not in SHARING_MODES:
            _checks.positive_int(type(self).__name__, "weight_sharing", weight_sharing)
        self.weight_sharing = weight_sharing
        self.capsule_types = capsule_types
        self.kernel_initializer = tf.keras.initializers.get(
            kernel_initializer or initializers.CapsuleFanIn())
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = tf.keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        num_in, input_dim = _checks.capsule_input_shape(type(self).__name__, input_shape)
        self.num_in, self.input_dim = num_in, input_dim
        index = sharing_index(num_in, self.weight_sharing, self.capsule_types)
        self.index = None if index is None else tf.constant(index)
        num_matrices = num_in if index is None else int(index.max()) + 1
        self.kernel = self.add_weight(
            name="kernel",
            shape=(num_matrices, input_dim, self.num_capsules, self.capsule_dim),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        super().build(input_shape)

    def full_kernel(self, kernel=None):
        """The kernel with one matrix per input capsule (gathered when weights are shared)."""
        kernel = self.kernel if kernel is None else kernel
        return kernel if self.index is None else tf.gather(kernel, self.index)

    def project(self, u, kernel):
        """`(batch, num_in, d)` x `(num_in, d, J, K)` -> `(batch, J, num_in, K)`."""
        u_t = tf.transpose(u, [1, 0, 2])  # (num_in, batch, d)
        flat = tf.reshape(kernel, [self.num_in, self.input_dim, self.num_capsules * self.capsule_dim])
        # W^T with `transpose_b`: the product is the same, but a converted model then holds the
        # constant W^T in the layout TFLite Micro's BATCH_MATMUL reads directly (adj_y); with W
        # it copies every weight into the arena at start-up.
        flat_t = tf.transpose(tf.cast(flat, u_t.dtype), [0, 2, 1])  # (num_in, J*K, d)
        u_hat = tf.matmul(u_t, flat_t, transpose_b=True)  # one matmul per input capsule
        u_hat = tf.reshape(u_hat, [self.num_in, -1, self.num_capsules, self.capsule_dim])
        return tf.transpose(u_hat, [1, 2, 0, 3])

    def call(self, u):
        return self.project(u, self.full_kernel())

    def macs(self):
        """Multiply-accumulates per example as `{bits: count}` (32 = float)."""
        return {32: self.num_in * self.input_dim * self.num_capsules * self.capsule_dim}

    def get_config(self):
        config = super().get_config()
        config.update(
            num_capsules=self.num_capsules,
            capsule_dim=self.capsule_dim,
            weight_sharing=self.weight_sharing,
            capsule_types=self.capsule_types,
            kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=tf.keras.regularizers.serialize(self.kernel_regularizer),
            kernel_constraint=tf.keras.constraints.serialize(self.kernel_constraint),
        )
        return config


@tf.keras.utils.register_keras_serializable(package="kcaps")
class XnorProjection(DenseProjection):
    """XnODR (Sun, Fard, Mahoor): the prediction vectors are xnorized, inputs and weights both.

    `u_hat[j|i, d] = K_i * alpha[i, j, d] * sum_k sign(u[i, k]) * sign(W[i, j, k, d])` with
    `K_i = mean_k |u[i, k]|` and `alpha[i, j, d] = mean_k |W[i, j, k, d]|`, as in the authors'
    code. Routing stays in float.

    Choices (documented because the paper body was not readable here):
    - signs are larq's `ste_sign`: sign(0) = +1 (Larq Compute Engine's bit convention; the
      authors' `binary_tanh` maps 0 to -1, a difference on a set of measure zero) and a
      straight-through gradient of 1 where |x| <= 1 (the authors' hard-tanh estimator);
    - the scaling factors carry no gradient (`stop_gradient`, as in the authors' `_mean_abs`);
    - the latent float weights are clipped to [-1, 1] (larq's `weight_clip`, the default of
      larq's binarized layers) unless another `kernel_constraint` is given.

    The kernel is a larq `QuantizedVariable` with precision 1, so `larq.models.summary` counts
    it as binary and it is stored in 1 bit per weight after conversion.
    """

    def __init__(self, num_capsules, capsule_dim, kernel_constraint=None, **kwargs):
        larq = _optional.larq()
        super().__init__(num_capsules, capsule_dim,
                         kernel_constraint=kernel_constraint or larq.constraints.WeightClip(1.0),
                         **kwargs)

    def _add_variable_with_custom_getter(self, name, **kwargs):
        if name != "kernel":
            return super()._add_variable_with_custom_getter(name, **kwargs)
        larq = _optional.larq()
        make_variable = kwargs.pop("getter")

        def getter(*args, **getter_kwargs):  # same wrapping as larq's own quantized layers
            return larq.quantized_variable.QuantizedVariable.from_variable(
                make_variable(*args, **getter_kwargs), larq.quantizers.ste_sign, precision=1)

        return super()._add_variable_with_custom_getter(name, getter=getter, **kwargs)

    def call(self, u):
        sign = _optional.larq().quantizers.ste_sign
        latent = self.full_kernel(self.kernel.latent_variable)
        k = tf.stop_gradient(tf.reduce_mean(tf.abs(u), axis=-1))  # (batch, num_in)
        alpha = tf.stop_gradient(tf.reduce_mean(tf.abs(latent), axis=1))  # (num_in, J, K)
        u_hat = self.project(sign(u), sign(latent))  # (batch, J, num_in, K)
        alpha = tf.cast(tf.transpose(alpha, [1, 0, 2]), k.dtype)  # (J, num_in, K)
        return u_hat * k[:, tf.newaxis, :, tf.newaxis] * alpha

    def macs(self):
        n, d, j, k = self.num_in, self.input_dim, self.num_capsules, self.capsule_dim
        return {1: n * d * j * k, 32: 2 * n * j * k}  # binary products, float rescaling
