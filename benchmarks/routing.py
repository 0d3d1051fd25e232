"""CapsuleDense against the formulations users otherwise run, timed in one process, interleaved.

Layer: 1152 input capsules (8-D) -> 10 output capsules (16-D), dynamic routing. Formulations:

- `capsnet-keras`: XifengGuo/CapsNet-Keras `capsulelayers.CapsuleLayer`, rewritten here from its
  description (not copied): the inputs are tiled over the output capsules, `map_fn` runs over the
  batch and multiplies each example by the *untiled* W `(J, N, K, D)` with `K.batch_dot` (the
  (J, N) axes batched, as Keras 2.0-2.2 did), routing by `batch_dot` (c . u_hat and v . u_hat^T),
  its own squash (`K.epsilon()` under the square root) and b zero-initialised.
- `efficient-einsum`: Efficient-CapsNet's u_hat, one `einsum('...ji,kjiz->...kjz', u, W)` with W
  `(J, N, D, K)`, followed by dynamic routing written in that code's style (broadcast multiply
  then `reduce_sum`). Efficient-CapsNet itself routes by self-attention; only its u_hat is theirs.
- `kcaps`: `kcaps.layers.CapsuleDense` inside a plain `tf.function` (how a user's own training
  loop runs it; `model.fit` runs the same graph), with its default hand-written gradients of the
  projection and the routing (`gradient="fused"` of `DenseProjection.project` and
  `kcaps.routing.dynamic_routing`).
- `kcaps-autodiff`: the same projection and routing ops differentiated by TensorFlow
  (`gradient="autodiff"` of both: kcaps before issue 19's second session), so the before and
  after of the hand-written gradients come from the same run.
- `kcaps-xla`: the same layer inside `tf.function(jit_compile=True)` (the whole step compiled by XLA).

Every formulation starts from the same W (transposed into its layout) and inputs; a step's
gradient is taken with respect to both W and the input capsules (a real network back-propagates
into the primary capsules). Outputs and both gradients are compared with `capsnet-keras`.

    python -m benchmarks.routing [--batches 32 128] [--rounds 5]

Peak memory: the growth of TensorFlow's CPU allocator peak (`tf.config.experimental.
get_memory_info`) over one forward+backward step, the inputs and weights already allocated.
"""
import argparse
import statistics
import sys
import time

import kcaps
import numpy as np
import tensorflow as tf

NUM_OUT, OUT_DIM, IN_DIM = 10, 16, 8


def capsnet_keras_squash(vectors, axis=-1):
    """CapsNet-Keras's squash: `|s|^2 / (1 + |s|^2) / sqrt(|s|^2 + eps) * s`, eps = 1e-7."""
    squared = tf.reduce_sum(tf.square(vectors), axis, keepdims=True)
    return squared / (1 + squared) / tf.sqrt(squared + 1e-7) * vectors


def keras22_batch_dot(x, y, transpose_y=False):
    """`K.batch_dot` of Keras <= 2.2 for these shapes: every leading axis is a batch axis.

    `(..., n) . (..., n, k) -> (..., k)`, or with `transpose_y` `(..., k) . (..., n, k)^T -> (..., n)`.
    """
    return tf.squeeze(tf.matmul(x[..., tf.newaxis, :], y, transpose_b=transpose_y), -2)


def capsnet_keras_layer(inputs, w, iterations):
    """inputs `(B, N, D)`, w `(J, N, K, D)` (CapsNet-Keras's layout) -> v `(B, J, K)`."""
    num_out, num_in = w.shape[0], w.shape[1]
    inputs_tiled = tf.tile(inputs[:, tf.newaxis], [1, num_out, 1, 1])  # (B, J, N, D)
    # per example: W (J, N, K, D) . x (J, N, D) over the (J, N) batch axes -> (J, N, K)
    inputs_hat = tf.map_fn(lambda x: keras22_batch_dot(x, w, transpose_y=True), inputs_tiled)
    b = tf.zeros([tf.shape(inputs_hat)[0], num_out, num_in])
    for i in range(iterations):
        c = tf.nn.softmax(b, axis=1)
        outputs = capsnet_keras_squash(keras22_batch_dot(c, inputs_hat))  # (B, J, K)
        if i < iterations - 1:
            b += keras22_batch_dot(outputs, inputs_hat, transpose_y=True)  # (B, J, N)
    return outputs


def efficient_einsum_layer(inputs, w, iterations):
    """inputs `(B, N, D)`, w `(J, N, D, K)` (Efficient-CapsNet's layout) -> v `(B, J, K)`."""
    u = tf.einsum("...ji,kjiz->...kjz", inputs, w)  # (B, J, N, K)
    b = tf.zeros_like(u[..., :1])  # (B, J, N, 1)
    for i in range(iterations):
        c = tf.nn.softmax(b, axis=1)
        s = tf.reduce_sum(tf.multiply(u, c), axis=-2)  # (B, J, K)
        v = capsnet_keras_squash(s)
        if i < iterations - 1:
            b += tf.reduce_sum(u * v[:, :, tf.newaxis], axis=-1, keepdims=True)
    return v


def _loss(v):
    return tf.reduce_sum(kcaps.ops.safe_norm(v))


def make_steps(batch, num_in, iterations, seed=0):
    """`{formulation: (forward, forward_backward)}` on shared data, and a function to compare."""
    rng = np.random.default_rng(seed)
    u = tf.constant(kcaps.ops.squash(rng.normal(size=(batch, num_in, IN_DIM))).numpy(), tf.float32)
    layer = kcaps.layers.CapsuleDense(NUM_OUT, OUT_DIM, routing_iterations=iterations)
    layer.build(u.shape)
    kernel = layer.kernel  # (N, D, J, K)
    w_keras = tf.Variable(tf.transpose(kernel, [2, 0, 3, 1]))  # (J, N, K, D)
    w_einsum = tf.Variable(tf.transpose(kernel, [2, 0, 1, 3]))  # (J, N, D, K)
    to_kcaps = {"capsnet-keras": [1, 3, 0, 2], "efficient-einsum": [1, 2, 0, 3]}
    layers = {
        "capsnet-keras": (lambda x: capsnet_keras_layer(x, w_keras, iterations), w_keras),
        "efficient-einsum": (lambda x: efficient_einsum_layer(x, w_einsum, iterations), w_einsum),
        "kcaps": (layer, kernel),
        "kcaps-autodiff": (lambda x: kcaps.routing.dynamic_routing(
            layer.projection.project(x, kernel, gradient="autodiff"), iterations,
            gradient="autodiff"), kernel),
        "kcaps-xla": (layer, kernel),
    }
    steps = {}
    for name, (fn, weight) in layers.items():
        jit = name.endswith("-xla")

        def forward(fn=fn):
            return fn(u)

        def forward_backward(fn=fn, weight=weight):
            with tf.GradientTape() as tape:
                tape.watch(u)
                v = fn(u)
                loss = _loss(v)
            grad_u, grad_w = tape.gradient(loss, [u, weight])
            return v, grad_u, grad_w

        steps[name] = (tf.function(forward, jit_compile=jit),
                       tf.function(forward_backward, jit_compile=jit))

    def compare():
        """Max |difference| from `capsnet-keras` of outputs, input gradients, W gradients."""
        v0, gu0, gw0 = steps["capsnet-keras"][1]()
        gw0 = tf.transpose(gw0, [1, 3, 0, 2])
        diffs = {}
        for name, (_, step) in steps.items():
            v, gu, gw = step()
            if name in to_kcaps:
                gw = tf.transpose(gw, to_kcaps[name])
            diffs[name] = tuple(float(tf.reduce_max(tf.abs(a - b)))
                                for a, b in ((v, v0), (gu, gu0), (gw, gw0)))
        scale = float(tf.reduce_max(tf.abs(gw0)))
        return diffs, scale

    return steps, compare


def time_interleaved(steps, which, rounds, repeats=2):
    """Median seconds per call of each step, the formulations interleaved within every round."""
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, pair in steps.items():
            fn = pair[which]
            for _ in range(repeats):
                start = time.perf_counter()
                tf.nest.map_structure(lambda t: t.numpy(), fn())
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory_mb(step):
    """Peak growth (MB) of TensorFlow's CPU allocator over one call of `step` (already warm)."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    base = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.nest.map_structure(lambda t: t.numpy(), step())
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - base) / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--num-in", type=int, default=1152)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    print(f"CapsuleDense {args.num_in}x{IN_DIM} -> {NUM_OUT}x{OUT_DIM}, {args.iterations} routing "
          f"iterations, {threads} threads, {args.rounds} interleaved rounds x 2 calls, medians")
    ok = True
    for batch in args.batches:
        steps, compare = make_steps(batch, args.num_in, args.iterations)
        diffs, scale = compare()  # also warms up (traces, XLA-compiles) every step
        for name, pair in steps.items():
            pair[0]()
        forward = time_interleaved(steps, 0, args.rounds)
        backward = time_interleaved(steps, 1, args.rounds)
        memory = {name: peak_memory_mb(pair[1]) for name, pair in steps.items()}
        print(f"\nbatch {batch} (max |W gradient| {scale:.2e})")
        print("| formulation | forward ms | x vs capsnet-keras | fwd+bwd ms | x vs capsnet-keras "
              "| peak MB | max |dv| | max |d grad_u| | max |d grad_W| |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in steps:
            dv, du, dw = diffs[name]
            ok &= max(dv, du, dw) <= 1e-5
            print(f"| {name} | {forward[name] * 1e3:.1f} | "
                  f"{forward['capsnet-keras'] / forward[name]:.2f} | {backward[name] * 1e3:.1f} | "
                  f"{backward['capsnet-keras'] / backward[name]:.2f} | {memory[name]:.0f} | {dv:.1e} | "
                  f"{du:.1e} | {dw:.1e} |")
    print("\noutputs and gradients equal to 1e-5:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
