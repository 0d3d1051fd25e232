"""Initializers for capsule transformation matrices.

>>> import kcaps
>>> w = kcaps.initializers.CapsuleFanIn()((1152, 8, 10, 16))
>>> round(float(w.numpy().std()), 2)      # ~ sqrt(1 / input_dim)
0.35
"""
import math

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="kcaps")
class CapsuleFanIn(tf.keras.initializers.Initializer):
    """Truncated normal with variance `scale / input_dim` for each `input_dim x capsule_dim` matrix.

    Keras's fan-based initializers treat the rank-4 kernel `(num_in, input_dim, num_out,
    capsule_dim)` like a convolution and count every capsule into the fan, which makes the
    prediction vectors - and, through the quadratic squash near zero, the output capsules - tiny
    at the start: small capsule networks then sit with zero-length outputs and gradients below
    Adam's epsilon for hundreds of steps. Here each matrix `W[i, j]` preserves the length of `u_i`
    on average (`|u_hat| ~ |u| sqrt(capsule_dim / input_dim)`), which makes routing start from
    capsules of useful length. This is kcaps' default; Sabour et al. do not state theirs.
    """

    def __init__(self, scale=1.0, seed=None):
        if not scale > 0:
            raise ValueError(f"CapsuleFanIn: scale must be > 0, got {scale}")
        self.scale, self.seed = float(scale), seed

    def __call__(self, shape, dtype=None, **kwargs):
        if len(shape) != 4:
            raise ValueError(f"CapsuleFanIn expects a rank-4 capsule kernel shape, got {shape}")
        stddev = math.sqrt(self.scale / shape[1]) / 0.87962566103423978  # truncation at 2 sigma
        return tf.random.truncated_normal(shape, 0.0, stddev, dtype or tf.float32, seed=self.seed)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}
