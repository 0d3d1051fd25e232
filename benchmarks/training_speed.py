"""Images per second in `model.fit`: kcaps against the same architecture in the peers' formulation.

For `capsnet` (with its decoder) and `small_capsnet`, the kcaps model is built as usual; the
`capsnet-keras` model is the same graph cloned with its `CapsuleDense` replaced by a layer that
runs `benchmarks.routing.capsnet_keras_layer` (CapsNet-Keras's formulation: map_fn over the
batch with the untiled W, `batch_dot` routing) on a W of CapsNet-Keras's layout. Everything else
(convolutions, primary capsules, mask, decoder, losses, Adam) is shared code. Variants:

- `kcaps`: `model.compile()` defaults (no XLA; the hand-written routing gradient).
- `kcaps-autodiff`: the same model with TensorFlow's automatic gradient through the projection
  and the routing iterations (`gradient="autodiff"`), kcaps' default before.
- `kcaps-xla`: `model.compile(jit_compile=True)`: the whole train step compiled by XLA.
- `kcaps-stopgrad`: `stop_routing_gradient=True` (the approximate gradient, an option).
- `capsnet-keras`: the cloned model, `compile()` defaults.
- `floor`: not a capsule network: the class capsules come from one `Dense` on the flattened
  primary capsules (then squashed), so the step costs everything but routing. The images/s
  of `floor` bound what any routing can reach in this model: `capsnet-keras`'s time divided by
  `floor`'s is the largest speed-up possible.

For `efficient_capsnet` (self-attention routing, no iterations: only `kcaps` and `kcaps-xla`
apply) the baseline is `efficient-capsnet`, the authors' graph as rebuilt in
`benchmarks.efficient_capsnet.authors_formulation` (grouped Conv2D primary capsules, einsum
projection and attention), `compile()` defaults.

Same random images and labels for all; one warm-up epoch each, then `--rounds` rounds in which
every variant fits one epoch in turn (interleaved); the median epoch time gives images/second.

    python -m benchmarks.training_speed [--models capsnet small_capsnet] [--images 256]
        [--batch-size 64] [--rounds 3] [--variants kcaps capsnet-keras ...]

On CPU, XLA compiles `capsnet`'s 9x9 convolutions into a train step that runs tens of times
slower than TensorFlow's own kernels (docs/notes/issue19.md), so `kcaps-xla` is run for
`small_capsnet` only unless `--xla-capsnet` is given.
"""
import argparse
import statistics
import sys
import time

import kcaps
import numpy as np
import tensorflow as tf

from benchmarks.efficient_capsnet import authors_formulation
from benchmarks.routing import capsnet_keras_layer

VARIANTS = ("kcaps", "kcaps-autodiff", "kcaps-xla", "kcaps-stopgrad", "floor", "capsnet-keras",
            "efficient-capsnet")
# The variants that apply to a model; the last one is the baseline of its speed-up column.
MODEL_VARIANTS = {
    "capsnet": ("kcaps", "kcaps-autodiff", "kcaps-xla", "kcaps-stopgrad", "floor",
                "capsnet-keras"),
    "small_capsnet": ("kcaps", "kcaps-autodiff", "kcaps-xla", "kcaps-stopgrad", "floor",
                      "capsnet-keras"),
    "efficient_capsnet": ("kcaps", "kcaps-xla", "efficient-capsnet"),
}


class CapsNetKerasCapsules(tf.keras.layers.Layer):
    """CapsNet-Keras's `CapsuleLayer` formulation (see `benchmarks.routing`), W `(J, N, K, D)`."""

    def __init__(self, num_capsule, dim_capsule, routings=3, **kwargs):
        super().__init__(**kwargs)
        self.num_capsule, self.dim_capsule, self.routings = num_capsule, dim_capsule, routings

    def build(self, input_shape):
        self.W = self.add_weight(
            name="W", shape=[self.num_capsule, input_shape[1], self.dim_capsule, input_shape[2]],
            initializer="glorot_uniform")
        super().build(input_shape)

    def call(self, inputs):
        return capsnet_keras_layer(inputs, self.W, self.routings)

    def get_config(self):
        config = super().get_config()
        config.update(num_capsule=self.num_capsule, dim_capsule=self.dim_capsule,
                      routings=self.routings)
        return config


class AutodiffCapsuleDense(kcaps.layers.CapsuleDense):
    """`CapsuleDense` (float projection, no weight sharing, dynamic routing) differentiated by
    TensorFlow's autodiff instead of the hand-written gradients."""

    def call(self, inputs):
        u_hat = self.projection.project(inputs, self.kernel, gradient="autodiff")
        return kcaps.routing.dynamic_routing(
            u_hat, self.routing_iterations, squash=self._squash, bias=self.bias,
            stop_gradient=self.stop_routing_gradient, gradient="autodiff")


class DenseCapsules(tf.keras.layers.Layer):
    """The `floor` variant: `(batch, N, D)` -> `Dense` of the flattened input -> `(batch, J, K)`."""

    def __init__(self, num_capsules, capsule_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_capsules, self.capsule_dim = num_capsules, capsule_dim
        self.dense = tf.keras.layers.Dense(num_capsules * capsule_dim)

    def call(self, inputs):
        flat = tf.reshape(inputs, [-1, inputs.shape[1] * inputs.shape[2]])
        return kcaps.ops.squash(
            tf.reshape(self.dense(flat), [-1, self.num_capsules, self.capsule_dim]))

    def get_config(self):
        config = super().get_config()
        config.update(num_capsules=self.num_capsules, capsule_dim=self.capsule_dim)
        return config


def build(model_name, variant, input_shape, num_classes):
    if variant == "efficient-capsnet":
        model = authors_formulation(input_shape, num_classes)
        model.compile(tf.keras.optimizers.Adam(1e-3))
        return model
    builder = kcaps.models.get(model_name)
    kwargs = {"stop_routing_gradient": True} if variant == "kcaps-stopgrad" else {}
    model = builder(input_shape, num_classes, **kwargs)
    replace = {"capsnet-keras": lambda layer: CapsNetKerasCapsules(
                   layer.num_capsules, layer.capsule_dim, layer.routing_iterations,
                   name=layer.name),
               "kcaps-autodiff": lambda layer: AutodiffCapsuleDense.from_config(
                   layer.get_config()),
               "floor": lambda layer: DenseCapsules(layer.num_capsules, layer.capsule_dim,
                                                    name=layer.name)}.get(variant)
    if replace is not None:
        def clone(layer):
            if isinstance(layer, kcaps.layers.CapsuleDense):
                return replace(layer)
            return layer.__class__.from_config(layer.get_config())

        model = tf.keras.models.clone_model(model, clone_function=clone)
    model.compile(tf.keras.optimizers.Adam(1e-3), jit_compile=variant == "kcaps-xla")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_VARIANTS),
                        choices=list(MODEL_VARIANTS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--xla-capsnet", action="store_true")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=args.images)
    print(f"model.fit on {args.images} random 28x28x1 images, batch {args.batch_size}, "
          f"{args.rounds} interleaved rounds of one epoch each, median epoch time")
    print("| model | variant | images/s | x vs baseline | parameters |")
    print("|---|---|---|---|---|")
    for model_name in args.models:
        variants = [v for v in MODEL_VARIANTS[model_name] if v in args.variants
                    and not (v == "kcaps-xla" and model_name == "capsnet" and not args.xla_capsnet)]
        models = {v: build(model_name, v, x.shape[1:], 10) for v in variants}
        for model in models.values():  # warm-up: tracing (and XLA compilation)
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        times = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, model in models.items():
                start = time.perf_counter()
                model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
                times[v].append(time.perf_counter() - start)
        speed = {v: args.images / statistics.median(t) for v, t in times.items()}
        base = speed.get(MODEL_VARIANTS[model_name][-1])
        for v in variants:
            ratio = f"{speed[v] / base:.2f}" if base else "-"
            print(f"| {model_name} | {v} | {speed[v]:.1f} | {ratio} | "
                  f"{models[v].count_params():,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
