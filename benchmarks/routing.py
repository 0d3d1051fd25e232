"""CapsuleDense forward+backward against the classic CapsNet-Keras formulation, same run.

Classic (the reference implementation's formulation): W tiled over the batch, inputs tiled over
the output capsules, u_hat by `batch_dot`, and a per-capsule `batch_dot` for s_j and for the agreement in every
routing iteration. kcaps: one batched matmul per layer, routing by broadcast-and-reduce, no tiling.

    python -m benchmarks.routing [--batch 128] [--repeats 10]

Target (issue 2): at least 2x faster, same outputs to 1e-5.
"""
import argparse
import os
import sys


import kcaps  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarks.common import median_seconds  # noqa: E402


def classic_capsule_layer(u, w, iterations):
    """u: (B, N, D); w: (J, N, K, D) as CapsNet-Keras stores it. Returns v: (B, J, K)."""
    batch = tf.shape(u)[0]
    num_out = w.shape[0]
    u_tiled = tf.tile(u[:, tf.newaxis, :, :, tf.newaxis], [1, num_out, 1, 1, 1])  # (B,J,N,D,1)
    w_tiled = tf.tile(w[tf.newaxis], [batch, 1, 1, 1, 1])  # (B,J,N,K,D)
    u_hat = tf.squeeze(tf.matmul(w_tiled, u_tiled), -1)  # (B,J,N,K)
    b = tf.zeros([batch, num_out, w.shape[1]])
    for i in range(iterations):
        c = tf.nn.softmax(b, axis=1)
        v = kcaps.ops.squash(batch_dot(c, u_hat))  # (B,J,K)
        if i < iterations - 1:
            b += batch_dot(v, u_hat, transpose=True)  # (B,J,N)
    return v


def batch_dot(x, y, transpose=False):
    """CapsNet-Keras's `K.batch_dot` with (batch, capsule) as batch axes (older Keras semantics).

    (B,J,N) . (B,J,N,K) -> (B,J,K), or with `transpose` (B,J,K) . (B,J,N,K)^T -> (B,J,N).
    """
    return tf.squeeze(tf.matmul(x[:, :, tf.newaxis, :], y, transpose_b=transpose), 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--num-in", type=int, default=1152)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    u = tf.constant(kcaps.ops.squash(rng.normal(size=(args.batch, args.num_in, 8))).numpy(),
                    tf.float32)
    layer = kcaps.layers.CapsuleDense(10, 16, routing_iterations=args.iterations)
    layer.build(u.shape)
    w_classic = tf.Variable(tf.transpose(layer.kernel, [2, 0, 3, 1]))  # (N,D,J,K) -> (J,N,K,D)

    @tf.function
    def kcaps_step():
        with tf.GradientTape() as tape:
            v = layer(u)
            loss = tf.reduce_sum(kcaps.ops.safe_norm(v))
        return v, tape.gradient(loss, layer.kernel)

    @tf.function
    def classic_step():
        with tf.GradientTape() as tape:
            v = classic_capsule_layer(u, w_classic, args.iterations)
            loss = tf.reduce_sum(kcaps.ops.safe_norm(v))
        return v, tape.gradient(loss, w_classic)

    v_new, g_new = kcaps_step()
    v_old, g_old = classic_step()
    out_diff = float(tf.reduce_max(tf.abs(v_new - v_old)))
    grad_diff = float(tf.reduce_max(tf.abs(tf.transpose(g_new, [2, 0, 3, 1]) - g_old)))

    t_new = median_seconds(lambda: kcaps_step()[0].numpy(), args.repeats)
    t_old = median_seconds(lambda: classic_step()[0].numpy(), args.repeats)
    print(f"CapsuleDense {args.num_in}x8 -> 10x16, {args.iterations} routing iterations, "
          f"batch {args.batch}, forward+backward, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")
    print(f"classic (CapsNet-Keras)  {t_old * 1e3:9.1f} ms")
    print(f"kcaps                    {t_new * 1e3:9.1f} ms")
    print(f"speed-up                 {t_old / t_new:9.2f} x   (target >= 2x)")
    print(f"max |output difference|  {out_diff:9.2e}   (target <= 1e-5)")
    print(f"max |gradient difference| {grad_diff:8.2e}")
    return 0 if out_diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
