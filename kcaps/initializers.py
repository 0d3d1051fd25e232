"""Initializers for capsule transformation matrices.

>>> import kcaps
>>> w = kcaps.initializers.CapsuleFanIn()((1152, 8, 10, 16))
>>> round(float(w.numpy().std()), 2)      # ~ sqrt(1 / input_dim)
0.35
"""
import math

import tensorflow as tf

# The standard deviation of a normal truncated at 2 sigma, as a fraction of the untruncated one.
_TRUNCATED_STD = 0.87962566103423978


def _truncated_normal(shape, stddev, dtype, seed):
    """Zero-mean normal truncated at 2 sigma whose values have standard deviation `stddev`."""
    return tf.random.truncated_normal(shape, 0.0, stddev / _TRUNCATED_STD, dtype or tf.float32,
                                      seed=seed)


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
        return _truncated_normal(shape, math.sqrt(self.scale / shape[1]), dtype, self.seed)

    def get_config(self):
        return {"scale": self.scale, "seed": self.seed}


@tf.keras.utils.register_keras_serializable(package="kcaps")
class CapsuleLengthPreserving(tf.keras.initializers.Initializer):
    """Capsule matrices scaled so that routing's first iteration gives `|s_j| ~ target_norm`.

    Deep capsule stacks that die at step 0 with `CapsuleFanIn` start with longer capsules and
    train with this init (measured up to 5 intermediate layers; below, and in the notes).

    **Why deep stacks die at step 0.** Routing's first iteration has `c_ij = 1 / J` (J output
    capsules), so `s_j = (1/J) sum_i W_ij u_i` is an *average* of the N input predictions. With
    the entries of W i.i.d., zero-mean, variance sigma^2, the N terms are independent given u:

        E |s_j|^2 = d_out sigma^2 sum_i |u_i|^2 / J^2 = d_out sigma^2 N m_in / J^2,

    with `m_in` the mean squared input length and `d_out` the output capsule dimension. With
    `CapsuleFanIn` (sigma^2 = 1 / d_in) this is `|s| ~ l_in sqrt(N d_out / d_in) / J`: for
    32 -> 32 capsules of 12-D, `|s| ~ 0.18 l_in`. The squash of a short s is `|v| ~ |s|^2`, so
    each layer maps `l -> ~0.031 l^2`: lengths fall doubly exponentially with depth (measured in
    kcaps: 0.66 -> 0.27 -> 0.0026 -> 2.6e-7 -> 1.8e-18), output and gradient vanish together,
    and the stack does not train. Later routing iterations cannot help: their agreements
    `u_hat . v` are as tiny as v.

    **The fix.** Choose sigma so that `E |s_j|^2 = target_norm^2` on inputs of length
    `input_length`:

        sigma^2 = (target_norm / input_length)^2 * J^2 / (N * d_out).

    This removes the per-layer factor `sqrt(N d_out / d_in) / J` (0.18 above) from the map
    between layers; what is left is the squash. With `k = target_norm / input_length`, inputs of
    length l give `|s| ~ k l` and `|v| ~ g(k l)`, `g(x) = x^2 / (1 + x^2)`. A non-zero fixed point
    `l = g(k l)` exists only for `k >= 2` (`k^2 l^2 - k^2 l + 1 = 0`): at k = 2 it is l = 0.5
    (marginally stable), above it the stable one moves towards 1. So no setting is both stable
    through any depth and short: `target_norm=1` (k = 2) holds the lengths with one routing
    iteration (measured: 0.62, 0.58, 0.55, 0.55, 0.54, 0.53 over 5 + 1 layers), but the two later
    routing iterations concentrate the coupling coefficients (s becomes a sum, not an average) and
    push every layer to 0.8-0.99, where routing saturates: measured, a 5-layer net of 16-D or
    32-D capsules does not learn (10% after 2 epochs on 1,280 digits, even with the class layer
    scaled down). The default `target_norm=0.5` (k = 1) keeps the quadratic map but without the
    0.18 factor, so lengths fall slowly instead of doubly exponentially (step 0, 5 layers of 32
    capsules, 3 iterations: 16-D 0.62 -> 0.51 -> 0.42 -> 0.33 -> 0.25 -> class 0.12; 32-D 0.49 ->
    0.29 -> 0.11 -> 0.019 -> 0.001 -> 7e-6) and 5-layer nets learn (72% for 16-D and 83% for 32-D
    after 2 epochs on 1,280 digits, where `CapsuleFanIn` stays at 10%); `target_norm=0.25` is dead
    again, `0.7` learns slowly (24%). Figures and commands: `docs/notes/issue21.md`.

    N, J and d_out are read from the kernel shape `(N, d_in, J, d_out)`; with
    weight sharing the first axis counts matrices, not input capsules, and the scale comes out
    too large by sqrt(capsules / matrices) (still live, not dead). The primary capsules' own length
    depends on the convolutions (he_normal: ~0.66).

    Args:
      target_norm: the expected `|s_j|` of the first routing iteration.
      input_length: the assumed root-mean-square length of the input capsules.
      seed: random seed.

    >>> import kcaps, numpy as np
    >>> init = kcaps.initializers.CapsuleLengthPreserving(seed=1)
    >>> w = init((32, 12, 32, 12)).numpy()
    >>> round(float(w.std() ** 2 * 32 * 12 / 32 ** 2 * 0.5 ** 2), 2)   # (target_norm)^2
    0.25
    """

    def __init__(self, target_norm=0.5, input_length=0.5, seed=None):
        if not target_norm > 0:
            raise ValueError(f"CapsuleLengthPreserving: target_norm must be > 0, got {target_norm!r}")
        if not input_length > 0:
            raise ValueError(
                f"CapsuleLengthPreserving: input_length must be > 0, got {input_length!r}")
        self.target_norm, self.input_length, self.seed = float(target_norm), float(input_length), seed

    def __call__(self, shape, dtype=None, **kwargs):
        if len(shape) != 4:
            raise ValueError(
                f"CapsuleLengthPreserving expects a rank-4 capsule kernel shape "
                f"(num_in, input_dim, num_capsules, capsule_dim), got {shape}")
        num_in, _, num_out, out_dim = (int(d) for d in shape)
        stddev = (self.target_norm / self.input_length) * num_out / math.sqrt(num_in * out_dim)
        return _truncated_normal(shape, stddev, dtype, self.seed)

    def get_config(self):
        return {"target_norm": self.target_norm, "input_length": self.input_length, "seed": self.seed}
