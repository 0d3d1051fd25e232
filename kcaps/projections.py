"""Projections: how a capsule layer turns input capsules u into prediction vectors u_hat.

`u_hat[j|i] = W[i, j] u[i]`: every (input capsule i, output capsule j) pair has its own
`capsule_dim x input_dim` matrix in Sabour et al. (2017). The variants here differ only in how W
is stored or applied, so every capsule layer and every routing algorithm reuses them:

- `DenseProjection`: one float matrix per pair (Sabour et al.); optionally shared across input
  capsules (FasTrCaps weight sharing, see `sharing_index` for which capsule uses which matrix).
- `XnorProjection`: the XnODR projection, inputs and weights binarized with XNOR-Net scaling
  (`binary_conv_scope` traces it in the form Larq Compute Engine turns into a binary conv).

Internally u_hat is laid out as `(batch, num_out, num_in, out_dim)`, the layout in which routing's
sums are batched matrix-vector products (see `kcaps.routing`). The projection is one batched
matmul over input capsules - no tiling of W over the batch - followed by one transpose.

>>> import kcaps, tensorflow as tf
>>> projection = kcaps.projections.DenseProjection(num_capsules=10, capsule_dim=16)
>>> projection(tf.zeros([4, 32, 8])).shape   # (batch, num_out, num_in, out_dim)
TensorShape([4, 10, 32, 16])
"""
import contextlib
import threading

import numpy as np
import tensorflow as tf

from kcaps import _checks, _optional, initializers, xnor
from kcaps.registry import Registry

SHARING_MODES = ("type", "position")
SHARING_ORDERS = ("position_major", "type_major")


def sharing_index(num_in, weight_sharing, capsule_types=None, sharing_order="position_major"):
    """Map each input capsule to the index of the matrix it uses.

    kcaps' `PrimaryCapsules` orders capsules position-major, `i = position * capsule_types +
    type`; FasTrCaps' PyTorch primary capsules are type-major, `i = type * positions + position`.
    Its weight sharing keeps K unique matrices and tiles them (`weight.repeat(R, 1, 1)` with
    `R = num_in / K`), so input capsule i uses matrix `i mod K` *in its own order*. Which kcaps
    option gives which sharing, for the 32 types x 36 positions = 1152 capsules of CapsNet:

    | sharing | matrices | kcaps option | FasTrCaps flag |
    |---|---|---|---|
    | per type (shared over the positions) | 32 | `"type"` (= int 32 position-major) | none |
    | per position (shared over the types) | 36 | `"position"` (= int 36 type-major) | `--digit-shared-weights 32` |
    | the paper's 6,719,920-parameter net | 32 | `32` with `sharing_order="type_major"` | `--digit-shared-weights 36` |

    The paper's configuration is neither per type nor per position: type-major capsule
    `36 t + p` uses matrix `(36 t + p) mod 32 = (4 t + p) mod 32`. An int K with the default
    `sharing_order="position_major"` tiles kcaps' own order instead (`i mod K`), which for
    K = capsule_types is per-type sharing.

    Args:
      num_in: number of input capsules.
      weight_sharing: None (one matrix per input capsule), an int K (tiling: capsule i uses matrix
        `i mod K`, counting i in `sharing_order`), `"type"` (one matrix per primary-capsule type,
        shared over positions) or `"position"` (one matrix per position, shared over types).
      capsule_types: number of capsule types of the primary-capsule layer; needed by `"type"`,
        `"position"` and `sharing_order="type_major"`.
      sharing_order: how an int K counts the capsules: `"position_major"` (kcaps' order) or
        `"type_major"` (FasTrCaps' PyTorch order). Ignored by None and the named modes.
    Returns:
      An int32 numpy array of shape (num_in,), or None without sharing.
    """
    if weight_sharing is None:
        return None
    if sharing_order not in SHARING_ORDERS:
        raise ValueError(f"sharing_order must be one of {SHARING_ORDERS}, got {sharing_order!r}")
    named = weight_sharing in SHARING_MODES
    if named or sharing_order == "type_major":
        if capsule_types is None or num_in % capsule_types:
            what = f"weight_sharing={weight_sharing!r}" if named else "sharing_order='type_major'"
            raise ValueError(
                f"{what} needs `capsule_types` dividing the {num_in} input capsules, got "
                f"capsule_types={capsule_types!r}"
            )
    i = np.arange(num_in)
    if named:
        return (i % capsule_types if weight_sharing == "type" else i // capsule_types).astype(np.int32)
    unique = _checks.positive_int("weight_sharing", "weight_sharing", weight_sharing)
    if unique > num_in:
        raise ValueError(f"weight_sharing={unique} unique matrices exceed the {num_in} input capsules")
    if sharing_order == "type_major":  # renumber kcaps' capsule (p, t) as FasTrCaps' t * P + p
        positions = num_in // capsule_types
        i = (i % capsule_types) * positions + i // capsule_types
    return (i % unique).astype(np.int32)


def sharing_layout(index):
    """`(outer, groups, inner)` with `index[i] == (i // inner) % groups`, or None if no such form.

    Capsule `i = (o * groups + k) * inner + r` then uses matrix k: a reshape of the capsules to
    `(outer, groups, inner)` puts every capsule that shares a matrix on one batched-matmul row
    block, so shared weights need no gather of the kernel (and no scatter of its gradient).
    Per type, per position and any K dividing the capsule count have this form; FasTrCaps'
    K = 32 tiling of 36 positions does not and falls back to the gather.
    """
    num_in = len(index)
    groups = int(index.max()) + 1
    for inner in range(1, num_in + 1):
        if num_in % (groups * inner) == 0:
            i = np.arange(num_in)
            if np.array_equal(index, (i // inner) % groups):
                return num_in // (groups * inner), groups, inner
    return None


@tf.keras.utils.register_keras_serializable(package="kcaps")
class DenseProjection(tf.keras.layers.Layer):
    """Float prediction vectors `u_hat[j|i] = W[i, j] u[i]` with no bias (Sabour et al., 2017).

    The kernel has shape `(num_matrices, input_dim, num_capsules, capsule_dim)`, with
    `num_matrices = num_in` without weight sharing.

    Input shape: `(batch, num_in, input_dim)`.
    Output shape: `(batch, num_capsules, num_in, capsule_dim)` (the routing layout, module doc).
    """

    def __init__(self, num_capsules, capsule_dim, weight_sharing=None, capsule_types=None,
                 sharing_order="position_major", kernel_initializer=None, kernel_regularizer=None,
                 kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.num_capsules = _checks.positive_int(type(self).__name__, "num_capsules", num_capsules)
        self.capsule_dim = _checks.positive_int(type(self).__name__, "capsule_dim", capsule_dim)
        if weight_sharing is not None and weight_sharing not in SHARING_MODES:
            _checks.positive_int(type(self).__name__, "weight_sharing", weight_sharing)
        if sharing_order not in SHARING_ORDERS:
            raise ValueError(f"{type(self).__name__}: `sharing_order` must be one of "
                             f"{SHARING_ORDERS}, got {sharing_order!r}")
        self.weight_sharing = weight_sharing
        self.capsule_types = capsule_types
        self.sharing_order = sharing_order
        self.kernel_initializer = tf.keras.initializers.get(
            kernel_initializer or initializers.CapsuleFanIn())
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = tf.keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        num_in, input_dim = _checks.capsule_input_shape(type(self).__name__, input_shape)
        self.num_in, self.input_dim = num_in, input_dim
        index = sharing_index(num_in, self.weight_sharing, self.capsule_types, self.sharing_order)
        self.index = None if index is None else tf.constant(index)
        self.layout = None if index is None else sharing_layout(index)
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

    def project(self, u, kernel, gradient="fused"):
        """`(batch, num_in, d)` x `(num_in, d, J, K)` -> `(batch, J, num_in, K)`.

        With `gradient="fused"` (default) and float32 / float64 operands of one dtype, the
        gradient is written by hand (`_project_with_gradient`); `"autodiff"` (or any other
        dtype) lets TensorFlow differentiate the ops. The forward ops, and so the inference
        graph, are the same either way.
        """
        if _checks.fused_gradient(f"{type(self).__name__}.project", gradient, u, kernel):
            return self._project_with_gradient(u, tf.convert_to_tensor(kernel))
        return self._project(u, kernel)[0]

    def _project(self, u, kernel):
        """The projection's ops: `u_hat` and the operands `u_t`, `flat_t` of its matmul."""
        u_t = tf.transpose(u, [1, 0, 2])  # (num_in, batch, d)
        flat = tf.reshape(kernel, [self.num_in, self.input_dim, self.num_capsules * self.capsule_dim])
        # W^T with `transpose_b`: the product is the same, but a converted model then holds the
        # constant W^T in the layout TFLite Micro's BATCH_MATMUL reads directly (adj_y); with W
        # it copies every weight into the arena at start-up.
        flat_t = tf.transpose(tf.cast(flat, u_t.dtype), [0, 2, 1])  # (num_in, J*K, d)
        u_hat = tf.matmul(u_t, flat_t, transpose_b=True)  # one matmul per input capsule
        u_hat = tf.reshape(u_hat, [self.num_in, -1, self.num_capsules, self.capsule_dim])
        return tf.transpose(u_hat, [1, 2, 0, 3]), u_t, flat_t

    def _project_with_gradient(self, u, kernel):
        """`_project` with its exact gradient by hand, oriented for the CPU's batched GEMMs.

        dW is computed as `u_t^T g` (num_in, d, J*K), already in the kernel's layout, where
        autodiff computes `g^T u_t` and transposes it: measured 2.2x faster for CapsNet's layer
        at batch 128 (14.5 against 32.6 ms, same process).
        """
        @tf.custom_gradient
        def project(u, kernel):
            u_hat, u_t, flat_t = self._project(u, kernel)

            def grad(du_hat):
                g = tf.reshape(tf.transpose(du_hat, [2, 0, 1, 3]),
                               [self.num_in, -1, self.num_capsules * self.capsule_dim])
                dkernel = tf.matmul(u_t, g, transpose_a=True)  # (num_in, d, J*K)
                du = tf.transpose(tf.matmul(g, flat_t), [1, 0, 2])  # (batch, num_in, d)
                return du, tf.reshape(dkernel, tf.shape(kernel))

            return u_hat, grad

        return project(u, kernel)

    def project_shared(self, u, kernel):
        """Shared kernel `(groups, d, J, K)` applied by reshape (`sharing_layout`), no gather."""
        outer, groups, inner = self.layout
        d, j, k = self.input_dim, self.num_capsules, self.capsule_dim
        u = tf.reshape(u, [-1, outer, groups, inner, d])
        u = tf.reshape(tf.transpose(u, [2, 0, 1, 3, 4]), [groups, -1, d])  # rows sharing W[g]
        flat = tf.reshape(kernel, [groups, d, j * k])
        u_hat = tf.matmul(u, tf.cast(flat, u.dtype))  # (groups, batch*outer*inner, J*K)
        u_hat = tf.reshape(u_hat, [groups, -1, outer, inner, j, k])
        u_hat = tf.transpose(u_hat, [1, 4, 2, 0, 3, 5])  # (batch, J, outer, groups, inner, K)
        return tf.reshape(u_hat, [-1, j, self.num_in, k])

    def call(self, u):
        if self.layout is not None:
            return self.project_shared(u, self.kernel)
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
            sharing_order=self.sharing_order,
            kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=tf.keras.regularizers.serialize(self.kernel_regularizer),
            kernel_constraint=tf.keras.constraints.serialize(self.kernel_constraint),
        )
        return config


_BINARY_CONV = threading.local()


@contextlib.contextmanager
def binary_conv_scope():
    """Within this scope `XnorProjection` traces its binary products as a grouped binary conv.

    Larq Compute Engine (LCE) binarizes convolutions only, and only grouped ones with a multiple
    of 32 input channels per group. Inside the scope, the products
    `sum_k sign(u[i, k]) * sign(W[i, j, k, d])` are traced as one 1x1 convolution with one group
    per input capsule: each capsule's `input_dim` channels are padded to the next multiple of 32
    with constant +1 inputs whose weights are half +1 and half -1, so the padding adds exactly 0
    (for an odd `input_dim` the one unbalanced weight is subtracted back as an integer). LCE
    turns that into its `LceBconv2d` and folds `alpha` into it; `kcaps_tflite.lce` converts
    inside this scope.

    Outside the scope (the default), the products are one batched matmul: TensorFlow cannot
    differentiate grouped convolutions on CPU and runs them 4-13x slower there. Both forms sum
    the same +-1 integers exactly, so the layer's output is bit-identical in either form.

    >>> import kcaps, tensorflow as tf
    >>> layer = kcaps.projections.XnorProjection(num_capsules=4, capsule_dim=8)
    >>> u = tf.random.normal([2, 16, 8])
    >>> outside = layer(u)
    >>> with kcaps.projections.binary_conv_scope():
    ...     inside = layer(u)
    >>> bool(tf.reduce_all(outside == inside))
    True
    """
    previous = getattr(_BINARY_CONV, "active", False)
    _BINARY_CONV.active = True
    try:
        yield
    finally:
        _BINARY_CONV.active = previous


def _binary_conv_active():
    return getattr(_BINARY_CONV, "active", False)


@tf.keras.utils.register_keras_serializable(package="kcaps")
class XnorProjection(DenseProjection):
    """XnODR (Sun, Fard, Mahoor): the prediction vectors are xnorized, inputs and weights both.

    `u_hat[j|i, d] = K_i * alpha[i, j, d] * sum_k sign(u[i, k]) * sign(W[i, j, k, d])` with
    `K_i = mean_k |u[i, k]|` and `alpha[i, j, d] = mean_k |W[i, j, k, d]|`, as in the authors'
    code (`XDR1_LPLayer`). Routing stays in float.

    Choices:
    - `sign` is `kcaps.xnor.sign`, the authors' binarizer: sign(0) = -1 (it matters: in the
      authors' head the input has just been through a ReLU) and the hard-tanh straight-through
      gradient (1 where |x| <= 1).
    - The scaling factors K and alpha carry no gradient, as in the authors' `_mean_abs`.
    - The latent float weights are clipped to [-1, 1] (larq's `WeightClip`, the default of
      larq's binarized layers) unless another `kernel_constraint` is given. The authors do not
      clip, but their straight-through gradient is 0 beyond |W| = 1, where a weight would stop
      training for good.

    The kernel is a larq `QuantizedVariable` with precision 1: `larq.models.summary` counts it
    as binary (1 bit per weight, 32x smaller than float). A deployed layer also stores alpha,
    one float per (i, j, d), i.e. one per `input_dim` binary weights. See `binary_conv_scope`
    for the form Larq Compute Engine converts to its binary convolution.

    Input shape: `(batch, num_in, input_dim)`.
    Output shape: `(batch, num_capsules, num_in, capsule_dim)`.
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
                make_variable(*args, **getter_kwargs), xnor.sign, precision=1)

        return super()._add_variable_with_custom_getter(name, getter=getter, **kwargs)

    def call(self, u):
        latent = tf.cast(self.full_kernel(self.kernel.latent_variable), u.dtype)  # (N, D, J, K)
        alpha = xnor.mean_abs(latent, axis=1)  # (N, J, K)
        k = xnor.mean_abs(u, axis=-1)[:, tf.newaxis, :, tf.newaxis]  # K_i, as (batch, 1, N, 1)
        if _binary_conv_active():
            scaled = self._scaled_products_as_conv(u, latent, alpha)
        else:  # (batch, J, N, K) integer counts, times alpha laid out the same way
            counts = self.project(xnor.sign(u), xnor.sign(latent))
            scaled = counts * tf.transpose(alpha, [1, 0, 2])
        return scaled * k

    def _scaled_products_as_conv(self, u, latent, alpha):
        """`alpha * sum_k sign(u) sign(W)` as one grouped 1x1 binary convolution (see the scope)."""
        n, d, j, c = self.num_in, self.input_dim, self.num_capsules, self.capsule_dim
        width = -(-d // 32) * 32  # channels per group: the next multiple of 32
        pad = width - d
        batch = tf.shape(u)[0]
        # sign(u) = -ste_sign(-u); the minus goes into the weights, so that the tensor LCE
        # quantizes feeds the convolution directly. Padded inputs are constant +1.
        x = tf.concat([-u, tf.ones([batch, n, pad], u.dtype)], axis=-1)
        x = _optional.larq().quantizers.ste_sign(tf.reshape(x, [batch, 1, 1, n * width]))
        balanced = np.concatenate([np.ones(pad // 2), -np.ones(pad - pad // 2)]).astype(np.float32)
        pad_weights = tf.tile(tf.constant(balanced, u.dtype)[tf.newaxis, :, tf.newaxis], [n, 1, j * c])
        weights = tf.concat([-tf.reshape(xnor.sign(latent), [n, d, j * c]), pad_weights], axis=1)
        kernel = tf.reshape(tf.transpose(weights, [1, 0, 2]), [1, 1, width, n * j * c])
        counts = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")  # (batch, 1, 1, N*J*K)
        if pad % 2:  # the one unbalanced padding weight (-1) added -1 to every count
            counts = counts + 1.0
        scaled = counts * tf.reshape(alpha, [n * j * c])  # per output channel: LCE folds it in
        return tf.transpose(tf.reshape(scaled, [batch, n, j, c]), [0, 2, 1, 3])

    def macs(self):
        """Per example: binary products, and two float multiplications (K, alpha) per output."""
        n, d, j, k = self.num_in, self.input_dim, self.num_capsules, self.capsule_dim
        return {1: n * d * j * k, 32: 2 * n * j * k}

    def scaling_factors(self):
        """Number of float scaling factors (alpha) a deployed layer stores with its binary kernel."""
        return int(np.prod(self.kernel.shape)) // self.input_dim


# Projections by name (`CapsuleDense(projection=...)`): the classes, built by the layer.
PROJECTIONS = Registry("projection", allow_callables=False)
PROJECTIONS.register("float", DenseProjection)  # Sabour et al.: float W per pair
PROJECTIONS.register("xnor", XnorProjection)  # XnODR: inputs and W binarized, XNOR-Net scaled
