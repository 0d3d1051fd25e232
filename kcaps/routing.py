"""Routing by agreement over prediction vectors, with the agreement product chosen by name;
and Efficient-CapsNet's one-pass self-attention routing (`self_attention_routing`).

Dynamic routing (Sabour et al., 2017), for prediction vectors `u_hat[j|i]`:

    b_ij = 0
    repeat `iterations` times:
        c_i  = softmax(b_i)            over the output capsules j
        s_j  = sum_i c_ij u_hat[j|i]
        v_j  = squash(s_j)
        b_ij += a(u_hat[j|i], v_j)     between iterations only

The agreement `a` is the float dot product in Sabour et al.; XnIDR (Sun et al.) xnorizes it:
`a = K_ij * beta_j * sum_d sign(u_hat[j|i, d]) * sign(v_j[d])` with `K_ij = mean_d |u_hat[j|i]|`
and `beta_j = mean_d |v_j|`.

Everything is vectorized over the batch and the capsules; the loop runs `iterations` times at
trace time, so the graph has no control flow (TFLite converts it as straight-line ops).
u_hat is laid out `(batch, num_out, num_in, dim)`, so both sums over capsules - s_j over the
input capsules and the agreement over the dimensions - are batched matrix-vector products and no
`c * u_hat`-sized temporary is ever made (measured 1.8x faster than broadcast-and-reduce).
The exact gradient of the dot-agreement routing is written by hand (`gradient="fused"`, the
default): the backward pass reads u_hat four times (3 iterations) and writes one u_hat-sized
tensor, where TensorFlow's autodiff writes one per product with u_hat. The forward ops are the
same either way, so the inference graph (and its TFLite conversion) does not change.

>>> import kcaps, tensorflow as tf
>>> u_hat = tf.random.normal([2, 10, 1152, 16])       # (batch, num_out, num_in, dim)
>>> kcaps.routing.dynamic_routing(u_hat, iterations=3).shape
TensorShape([2, 10, 16])
"""
import dataclasses
import typing

import tensorflow as tf

from kcaps import _checks, ops, xnor
from kcaps.registry import Registry


def _dot_with_outputs(u_hat, v):
    """`sum_d u_hat[b, j, i, d] * v[b, j, d]` -> `(batch, num_out, num_in)` as a batched matvec."""
    return tf.squeeze(tf.matmul(tf.expand_dims(v, 2), u_hat, transpose_b=True), axis=2)


def dot_agreement(u_hat, v):
    """Sabour et al.: `u_hat[j|i] . v_j`, shape `(batch, num_out, num_in)`."""
    return _dot_with_outputs(u_hat, v)


def xnor_agreement(u_hat, v):
    """XnIDR: the dot product of the signs, rescaled by the XNOR-Net factors K_ij and beta_j.

    Signs are `kcaps.xnor.sign`, the authors' binarizer (sign(0) = -1, hard-tanh
    straight-through gradient); the scaling factors carry no gradient, as in the authors' code.
    Both operands are activations, so this product has no constant binary weights that Larq
    Compute Engine could pack into a binary kernel: deployed, it runs as float ops.
    """
    k = xnor.mean_abs(u_hat, axis=-1)  # (batch, num_out, num_in)
    beta = xnor.mean_abs(v, axis=-1)  # (batch, num_out)
    return k * beta[..., tf.newaxis] * _dot_with_outputs(xnor.sign(u_hat), xnor.sign(v))


AGREEMENTS = Registry("agreement")
AGREEMENTS.register("dot", dot_agreement)
AGREEMENTS.register("xnor", xnor_agreement)


def dynamic_routing(u_hat, iterations=3, agreement="dot", squash=ops.squash, bias=None,
                    stop_gradient=False, gradient="fused"):
    """Route prediction vectors to output capsules.

    Args:
      u_hat: prediction vectors of shape `(batch, num_out, num_in, out_dim)`.
      iterations: number of routing iterations (>= 1).
      agreement: `"dot"` (Sabour et al.) or `"xnor"` (XnIDR), or a function `(u_hat, v) -> logits`.
      squash: the squash function.
      bias: optional `(num_out, out_dim)` tensor added to s_j (Google's reference code and
        FasTrCaps do this; the paper does not).
      stop_gradient: if True, the iterations before the last route `tf.stop_gradient(u_hat)`, so
        the gradient reaches u_hat only through the last `s_j = sum_i c_ij u_hat[j|i]` with the
        coupling coefficients c held constant (as several reference implementations do). The
        forward values are unchanged; the gradient is an approximation. Default False: the
        exact gradient through every iteration.
      gradient: how the exact gradient is computed (the forward values are the same):
        `"fused"` (default) differentiates the iterations by hand (`_fused_dot_routing`), so
        the backward pass writes one tensor of u_hat's size; `"autodiff"` lets TensorFlow
        differentiate the ops, which writes one per product with u_hat. `"fused"` applies to the
        dot agreement in float32 / float64 without `stop_gradient`; anything else uses autodiff.
    Returns:
      Output capsules `v` of shape `(batch, num_out, out_dim)`, in the dtype of `u_hat`.

    Under mixed precision the large products stay in the compute dtype (float16 / bfloat16), but
    the logits b accumulate and the softmax runs in float32 (the squash too, see `kcaps.ops`):
    a 3-digit mantissa cannot hold agreements summed over iterations.
    """
    if iterations < 1:
        raise ValueError(f"routing iterations must be >= 1, got {iterations}")
    fused = _checks.fused_gradient("dynamic_routing", gradient, u_hat)
    agree = AGREEMENTS.get(agreement)
    if fused and agree is dot_agreement and not stop_gradient:
        return _fused_dot_routing(u_hat, iterations, squash, bias)
    routed = tf.stop_gradient(u_hat) if stop_gradient else u_hat  # iterations before the last
    return _iterate(u_hat, routed, iterations, agree, squash, bias)[2][-1]


def _iterate(u_hat, routed, iterations, agree, squash, bias):
    """The routing iterations: lists of c^t (None for t = 0), s^t and v^t, t = 0..T-1.

    `routed` is what the iterations before the last read (u_hat, or u_hat with its gradient
    stopped); the last reads `u_hat`.
    """
    num_out = u_hat.shape[1]
    # the logits b: float32, or float64 for float64 predictions
    logits_dtype = tf.float64 if u_hat.dtype == tf.float64 else tf.float32
    logits = None  # b_ij, laid out (batch, num_out, num_in)
    couplings, sums, outputs = [], [], []
    for iteration in range(iterations):
        x = u_hat if iteration == iterations - 1 else routed
        if logits is None:  # b = 0, so c = softmax(0) = 1 / num_out exactly: skip the softmax
            c = None
            s = tf.reduce_sum(x, axis=2) * (1.0 / num_out)
        else:
            c = tf.cast(tf.nn.softmax(logits, axis=1), u_hat.dtype)  # over the output capsules
            s = _weighted_sum(c, x)  # (batch, num_out, dim)
        if bias is not None:
            s = s + tf.cast(bias, s.dtype)
        v = squash(s)
        couplings.append(c)
        sums.append(s)
        outputs.append(v)
        if iteration < iterations - 1:
            update = tf.cast(agree(x, v), logits_dtype)
            logits = update if logits is None else logits + update
    return couplings, sums, outputs


def _weighted_sum(c, u_hat):
    """`sum_i c[b, j, i] u_hat[b, j, i, :]` -> `(batch, num_out, dim)` as a batched matvec."""
    return tf.squeeze(tf.matmul(tf.expand_dims(c, 2), u_hat), axis=2)


def _fused_dot_routing(u_hat, iterations, squash, bias):
    """`dynamic_routing` with the dot agreement and a hand-written exact gradient.

    Forward: the ops of `dynamic_routing` (same values), keeping the small per-iteration
    tensors c^t `(batch, num_out, num_in)`, s^t and v^t `(batch, num_out, dim)`.

    Backward, iterations in reverse, with G = dL/db^{t+1} accumulated (b^{t+1} = b^t + a^t and
    a^t = u_hat . v^t, so dL/da^t = G):
        dv^t  = sum_i G_i u_hat_i             (t < T-1; batched matvec, reads u_hat)
        ds^t  = squash'(s^t)^T dv^t           (small; the squash differentiated by TensorFlow)
        dc^t  = u_hat . ds^t                  (batched matvec, reads u_hat; not for t = 0)
        G    += c^t * (dc^t - sum_j c^t dc^t)  (softmax over the output capsules)
    and du_hat = sum_t c^t (x) ds^t + sum_{t<T} G^{t+1} (x) v^t, written once as ONE batched
    matmul `(batch, num_out, 2T-1, num_in)^T x (batch, num_out, 2T-1, dim)`. Autodiff instead
    writes one u_hat-sized outer product per product with u_hat (2T-1) and sums them.
    """
    num_out = u_hat.shape[1]
    dtype = u_hat.dtype
    args = [u_hat] if bias is None else [u_hat, tf.cast(bias, dtype)]

    @tf.custom_gradient
    def route(*args):
        u_hat = args[0]
        bias = args[1] if len(args) > 1 else None
        couplings, sums, outputs = _iterate(u_hat, u_hat, iterations, dot_agreement, squash,
                                            bias)

        def grad(dv):
            dv = tf.cast(dv, dtype)
            left, right = [], []  # du_hat = sum_p left[p] (x) right[p]
            g = None  # dL/db^{t+1}, (batch, num_out, num_in)
            dbias = None
            for t in reversed(range(iterations)):
                if g is not None:  # v^t (t < T-1) reaches the loss only through a^t
                    dv = _weighted_sum(g, u_hat)
                    left.append(g)
                    right.append(outputs[t])
                with tf.GradientTape() as tape:
                    tape.watch(sums[t])
                    v = squash(sums[t])
                ds = tape.gradient(v, sums[t], output_gradients=dv)
                if bias is not None:
                    dbias = tf.reduce_sum(ds, axis=0) if dbias is None else (
                        dbias + tf.reduce_sum(ds, axis=0))
                c = couplings[t]
                if c is None:  # t = 0: c = 1 / num_out for every pair
                    left.append(tf.fill(tf.shape(u_hat)[:3], tf.constant(1.0 / num_out, dtype)))
                else:
                    left.append(c)
                    dc = _dot_with_outputs(u_hat, ds)
                    dlogits = c * (dc - tf.reduce_sum(c * dc, axis=1, keepdims=True))
                    g = dlogits if g is None else g + dlogits
                right.append(ds)
            # Stacked on axis 2, not last: each c^t / G stays a contiguous row (a last-axis stack
            # interleaves them, measured slower); the matmul reads it transposed.
            du_hat = tf.matmul(tf.stack(left, axis=2), tf.stack(right, axis=2), transpose_a=True)
            return [du_hat] if bias is None else [du_hat, dbias]

        return outputs[-1], grad

    return route(*args)


def self_attention_routing(u_hat, pair_bias=None, squash=ops.squash, bias=None):
    """Efficient-CapsNet's non-iterative routing (Mazzia et al., 2021): self-attention, one pass.

    For each output capsule j, every prediction `u_hat[j|i]` is scored by its agreement with all
    predictions for j, `a_ij = u_hat[j|i] . sum_k u_hat[j|k] / sqrt(out_dim)` (the row sums of
    the attention matrix `U_j U_j^T / sqrt(out_dim)`); then

        c_ij = softmax_j(a_ij) + pair_bias[j, i]      (softmax over the output capsules)
        s_j  = sum_i c_ij u_hat[j|i] (+ bias_j),   v_j = squash(s_j)

    The learned bias is added to the coupling coefficients after the softmax, as the authors'
    code does (`c = softmax(...) + b`), so the c_ij of an input capsule need not sum to 1.

    Args:
      u_hat: prediction vectors of shape `(batch, num_out, num_in, out_dim)`.
      pair_bias: optional `(num_out, num_in)` tensor added to the coupling coefficients.
      squash: the squash function.
      bias: optional `(num_out, out_dim)` tensor added to s_j.
    Returns:
      Output capsules `v` of shape `(batch, num_out, out_dim)`, in the dtype of `u_hat`.

    The sums over capsules are batched matrix products in the layout of `dynamic_routing`, so
    the graph converts to TFLite builtin ops (BATCH_MATMUL, SUM, SOFTMAX) with no Einsum.

    >>> import kcaps, tensorflow as tf
    >>> kcaps.routing.self_attention_routing(tf.random.normal([2, 10, 16, 16])).shape
    TensorShape([2, 10, 16])
    """
    dim = u_hat.shape[-1]
    total = tf.reduce_sum(u_hat, axis=2)  # (batch, num_out, dim): sum over the input capsules
    logits = _dot_with_outputs(u_hat, total) * (1.0 / float(dim) ** 0.5)  # (batch, out, in)
    c = tf.nn.softmax(tf.cast(logits, tf.float32), axis=1)  # over the output capsules
    if pair_bias is not None:
        c = c + tf.cast(pair_bias, c.dtype)
    c = tf.cast(c, u_hat.dtype)
    s = _weighted_sum(c, u_hat)  # (batch, num_out, dim)
    if bias is not None:
        s = s + tf.cast(bias, s.dtype)
    return squash(s)


@dataclasses.dataclass(frozen=True)
class Routing:
    """A routing algorithm as `kcaps.layers.CapsuleDense(routing=name)` runs it.

    Attributes:
      route: `(u_hat, iterations, squash, bias, pair_bias, stop_gradient) -> v`.
      iterative: whether `routing_iterations` applies (otherwise only its default is accepted).
      pair_bias: whether the layer learns a `(num_capsules, num_in)` bias on the couplings.
      agreement: the agreement of an iterative routing (`"dot"`, `"xnor"`), for MAC counts.
      needs_larq: whether the algorithm needs larq.
    """

    route: typing.Callable
    iterative: bool = True
    pair_bias: bool = False
    agreement: str = None
    needs_larq: bool = False


# Routing algorithms by name (`CapsuleDense(routing=...)`); a layer must know the weights and
# arguments of its routing, so only registered ones are accepted.
ROUTINGS = Registry("routing", allow_callables=False)


def _dynamic(agreement):
    """`dynamic_routing` with `agreement`, in the routing table's calling convention."""
    return lambda u_hat, iterations, squash, bias, pair_bias, stop_gradient: dynamic_routing(
        u_hat, iterations, agreement=agreement, squash=squash, bias=bias,
        stop_gradient=stop_gradient)


ROUTINGS.register("dynamic", Routing(_dynamic("dot"), agreement="dot"))
ROUTINGS.register("xnor_agreement", Routing(_dynamic("xnor"), agreement="xnor", needs_larq=True))
# One pass: no iteration before the last, so `stop_gradient` (of those iterations) changes nothing.
ROUTINGS.register("self_attention", Routing(
    lambda u_hat, iterations, squash, bias, pair_bias, stop_gradient: self_attention_routing(
        u_hat, pair_bias=pair_bias, squash=squash, bias=bias), iterative=False, pair_bias=True))
