"""A weight as tfmot should see it: the same variable, its axes permuted (2:4 along the reduction axis).

tfmot's `sparsity_m_by_n` groups a rank-4 weight along its axis 2 (a convolution's input
channels, the axis TFLite's `[cout, h, w, cin]` layout keeps innermost) and a rank-2 weight
along its axis 0 (a Dense layer's inputs). For convolutions and Dense layers that is the
reduction axis, the one structured-sparse kernels (sparse tensor cores, XNNPACK, CMSIS-NN) need
the 2:4 groups on. A capsule kernel `(num_in, input_dim, num_capsules, capsule_dim)` reduces
over `input_dim` (`u_hat = W u`), its axis 1; read as a convolution, tfmot would group across
output capsules instead. A layer's `get_prunable_weights()` can return a `PermutedWeight` of its
kernel with `input_dim` moved to axis 2: tfmot computes the mask on the permuted view and its
`weight.assign(weight * mask)` writes back through the inverse permutation, so the layer keeps
its storage (and its checkpoints) and the zeros fall in groups of 4 along `input_dim`.

tfmot 0.8.1 touches a prunable weight only through `shape`, `dtype`, `tf.abs` / `tf.multiply`
(tensor conversion, registered below), `assign` and the default strategy's `update`; those are
what `PermutedWeight` provides. The wrapper and its callbacks are tfmot's own, unchanged.

>>> import tensorflow as tf
>>> kernel = tf.Variable(tf.reshape(tf.range(24.0), (1, 2, 3, 4)))
>>> view = PermutedWeight(kernel, (0, 2, 1, 3))
>>> view.shape
TensorShape([1, 3, 2, 4])
>>> _ = view.assign(tf.zeros(view.shape)); float(tf.reduce_sum(kernel))
0.0
"""
import numpy as np
import tensorflow as tf


class PermutedWeight:
    """`tf.transpose(variable, perm)` that can be assigned to (the write goes to `variable`).

    Args:
      variable: the layer's `tf.Variable`.
      perm: the permutation of its axes that tfmot should see.
    """

    def __init__(self, variable, perm):
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(variable.shape))):
            raise ValueError(f"PermutedWeight: perm {perm} is not a permutation of the "
                             f"{len(variable.shape)} axes of {variable.name} {tuple(variable.shape)}")
        self.variable, self.perm = variable, perm
        self.inverse = tuple(int(p) for p in np.argsort(perm))
        if hasattr(variable, "true_dtype"):  # mixed precision (AutoCastVariable)
            self.true_dtype = variable.true_dtype

    @property
    def shape(self):
        return tf.TensorShape([self.variable.shape[p] for p in self.perm])

    def get_shape(self):
        return self.shape

    @property
    def dtype(self):
        return self.variable.dtype

    @property
    def name(self):
        return self.variable.name

    @property
    def device(self):
        return self.variable.device

    def value(self):
        return tf.transpose(self.variable, self.perm)

    read_value = value

    def numpy(self):
        return np.transpose(self.variable.numpy(), self.perm)

    def assign(self, value, use_locking=False, name=None, read_value=True):
        return self.variable.assign(tf.transpose(value, self.inverse), use_locking=use_locking,
                                    name=name, read_value=read_value)

    def __repr__(self):
        return f"<PermutedWeight {self.variable.name} perm={self.perm} shape={tuple(self.shape)}>"


tf.register_tensor_conversion_function(
    PermutedWeight, lambda view, dtype=None, name=None, as_ref=False: view.value())
