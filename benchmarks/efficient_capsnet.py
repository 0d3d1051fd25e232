"""efficient_capsnet against small_capsnet on the real-digits split, and self-attention routing
against dynamic routing, in one run (issue 18).

    python -m benchmarks.efficient_capsnet [--seeds 0 1 2] [--small-seeds 0] [--decoder-seeds]
        [--authors-seeds] [--epochs 10] [--rounds 3] [--timing-steps 20]
        [--output runs/efficient_capsnet] [--skip routing timing train deploy]

Recipe (the issue's): 8,000 training / 2,000 test real digits, 10 epochs, batch 64, Adam 5e-4
decayed by 0.97 per epoch, no augmentation. Prints, in this order:

1. The class-capsule layer alone, forward and forward + backward, batch 64, at Efficient-CapsNet's
   sizes (16 input capsules of 8-D -> 10 of 16-D) and at CapsNet's (1152 -> 10): kcaps'
   self-attention routing, kcaps' dynamic routing with 3 iterations, and the authors'
   formulation (labelled "authors' form."), timed interleaved in this process.
2. Seconds per training step of kcaps' efficient_capsnet, the authors' formulation (as they
   build it, and with their grouped primary convolution as a DepthwiseConv2D, to attribute the
   difference) and small_capsnet, interleaved (`--rounds` rounds of `--timing-steps` steps
   each; median x 125 steps = seconds per epoch), and whether the authors' formulation
   converts with builtin ops.
3. Per trained model (reused from `--output` when it is there; `--decoder-seeds`: efficient_capsnet
   trained with the authors' generator, as they train it; `--authors-seeds`: the authors'
   formulation below, DepthwiseConv2D variant, trained with the same generator and recipe): test
   accuracy per seed (after the last epoch) and the median, the best epoch's test accuracy (what
   the authors' checkpoint keeps: it monitors accuracy on the test data), parameters, seconds
   per epoch of the full run; unless `--skip deploy`, for the first seed of kcaps' models: int8
   size, TFLite Micro arena (the microcontroller build) and host latency with the official tool
   (1 thread, XNNPACK, int8).

"Authors' formulation" is rebuilt here from reading EscVM/Efficient-CapsNet (utils/layers.py,
models/efficient_capsnet_graph_mnist.py): a grouped Conv2D (groups = channels) for the primary
capsules, einsum projections and attention, the coupling bias added after the softmax, their
squash with eps = 1e-20, the same four convolutions. It is a baseline for timing and
conversion, not their files.
"""
import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

import kcaps  # noqa: I001  (first: Keras 2 behind tf.keras)
import tensorflow as tf

from benchmarks.common import print_table
from kcaps.models.capsule_model import LABEL_INPUT, RECONSTRUCTION
from kcaps.models.efficient_capsnet import CONVOLUTIONS, GENERATOR_INITIALIZERS
from kcaps_tflite import benchmark, convert, pipeline
from kcaps_training import datasets
from kcaps_training import train as recipe

RECIPE = dict(batch_size=64, learning_rate=5e-4, lr_decay=0.97, max_shift=0)


# --- the authors' formulation, rebuilt from reading their code (timing / conversion baseline) ---

def _authors_squash(s, eps=1e-20):
    n = tf.norm(s, axis=-1, keepdims=True)
    return (1 - 1 / (tf.exp(n) + eps)) * (s / (n + eps))


class AuthorsFCCaps(tf.keras.layers.Layer):
    """Self-attention routing as the authors compute it: einsums, bias after the softmax."""

    def __init__(self, num_capsules, capsule_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_capsules, self.capsule_dim = num_capsules, capsule_dim

    def build(self, input_shape):
        num_in, dim_in = input_shape[-2], input_shape[-1]
        self.w = self.add_weight(name="w", shape=(self.num_capsules, num_in, dim_in,
                                                  self.capsule_dim), initializer="he_normal")
        self.b = self.add_weight(name="b", shape=(self.num_capsules, num_in, 1),
                                 initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        u = tf.einsum("bid,jide->bjie", inputs, self.w)  # (batch, out, in, dim)
        a = tf.einsum("bjie,bjke->bji", u, u)[..., None] / tf.sqrt(float(self.capsule_dim))
        c = tf.nn.softmax(a, axis=1) + self.b
        return _authors_squash(tf.reduce_sum(u * c, axis=-2))


def authors_formulation(input_shape=(28, 28, 1), num_classes=10, grouped=True, decoder=False):
    """`grouped=False`: the primary capsules' grouped Conv2D as a DepthwiseConv2D (same maths).

    `decoder=True`: their training graph, with their generator (kcaps' mask and decoder with
    their initializers: the same maths as their `Mask` and `generator_graph`).
    """
    image = tf.keras.Input(input_shape)
    h = image
    for filters, kernel, stride in CONVOLUTIONS:
        h = tf.keras.layers.Conv2D(filters, kernel, stride, activation="relu",
                                   kernel_initializer="he_normal")(h)
        h = tf.keras.layers.BatchNormalization()(h)
    if grouped:  # their layer: a Conv2D with groups = channels, i.e. depthwise
        h = tf.keras.layers.Conv2D(128, h.shape[1], groups=128)(h)
    else:
        h = tf.keras.layers.DepthwiseConv2D(h.shape[1])(h)
    primary = tf.keras.layers.Lambda(lambda t: _authors_squash(tf.reshape(t, [-1, 16, 8])))(h)
    caps = AuthorsFCCaps(num_classes, 16)(primary)
    lengths = tf.keras.layers.Lambda(
        lambda v: tf.sqrt(tf.reduce_sum(tf.square(v), -1) + 1e-7), name="lengths")(caps)
    if not decoder:
        return kcaps.models.CapsuleModel(image, lengths, name="authors_formulation")
    label = tf.keras.Input((num_classes,), name=LABEL_INPUT)
    masked = kcaps.layers.CapsuleMask()([caps, label])
    reconstruction = kcaps.layers.CapsuleDecoder(input_shape, name=RECONSTRUCTION,
                                                 **GENERATOR_INITIALIZERS)(masked)
    return kcaps.models.CapsuleModel([image, label], [lengths, reconstruction],
                                     name="authors_formulation")


# --- 1. the routing layer alone ---

def routing_layers(num_in, dim_in=8, num_out=10, dim_out=16):
    layers = {
        "self_attention": kcaps.layers.CapsuleDense(num_out, dim_out, routing="self_attention"),
        "dynamic x3": kcaps.layers.CapsuleDense(num_out, dim_out, routing="dynamic",
                                                routing_iterations=3),
        "authors' form.": AuthorsFCCaps(num_out, dim_out),
    }
    for layer in layers.values():
        layer.build((None, num_in, dim_in))
    return layers


def time_routing(batch, rounds, repeats=20):
    rows = []
    for num_in in (16, 1152):
        u = tf.random.normal([batch, num_in, 8])
        layers = routing_layers(num_in)
        fns = {}
        for name, layer in layers.items():
            forward = tf.function(lambda layer=layer: layer(u))

            @tf.function
            def backward(layer=layer):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(layer(u))
                return tape.gradient(loss, layer.trainable_weights)

            fns[name] = (forward, backward)
        times = {(name, kind): [] for name in fns for kind in (0, 1)}
        for fn in fns.values():
            fn[0](), fn[1]()  # trace
        for _ in range(rounds):  # interleaved: the noise of other jobs is common to all
            for (name, kind), values in times.items():
                fn = fns[name][kind]
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                values.append((time.perf_counter() - start) / repeats * 1e3)
        base = {kind: statistics.median(times[("dynamic x3", kind)]) for kind in (0, 1)}
        for name in fns:
            fwd, bwd = (statistics.median(times[(name, kind)]) for kind in (0, 1))
            rows.append({"inputs": f"{num_in} x 8-D", "layer": name, "forward ms": fwd,
                         "fwd+bwd ms": bwd, "fwd+bwd vs dynamic x3": f"{base[1] / bwd:.2f}x"})
    return rows


# --- 2. training step time, interleaved ---

def time_training(data, rounds, steps):
    builders = {
        "efficient_capsnet (kcaps)": lambda: kcaps.models.efficient_capsnet(),
        "authors' formulation": authors_formulation,
        "authors' formulation, DepthwiseConv2D": lambda: authors_formulation(grouped=False),
        "small_capsnet": lambda: kcaps.models.small_capsnet(),
    }
    models = {}
    for name, build in builders.items():
        model = build()
        model.compile(tf.keras.optimizers.Adam(5e-4))
        models[name] = model
    n = steps * RECIPE["batch_size"]
    x, y = data.x_train[:n], data.y_train[:n]
    for model in models.values():  # trace and warm up
        model.fit(x[:2 * RECIPE["batch_size"]], y[:2 * RECIPE["batch_size"]],
                  batch_size=RECIPE["batch_size"], verbose=0)
    times = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            model = models[name]
            start = time.perf_counter()
            model.fit(x, y, batch_size=RECIPE["batch_size"], epochs=1, verbose=0)
            times[name].append((time.perf_counter() - start) / steps)
    steps_per_epoch = -(-len(data.x_train) // RECIPE["batch_size"])
    return {name: statistics.median(values) * steps_per_epoch for name, values in times.items()}


def authors_conversion():
    """Whether the authors' formulation converts to float32 TFLite with builtin ops only."""
    try:
        convert.convert(authors_formulation(), "float32")
    except Exception as error:  # noqa: BLE001  (report any converter failure)
        ops = [line.strip() for line in str(error).splitlines() if line.startswith("TF Select ops")]
        return f"fails ({type(error).__name__}; {', '.join(ops) or str(error)[:160]})"
    return "converts"


# --- 3. training runs and deployment figures ---

AUTHORS = "authors' formulation+decoder"


def trained(model, seed, epochs, data, output):
    """Train `model` (a registered name, `+decoder` for its reconstruction decoder, or `AUTHORS`)
    or reuse it."""
    name, decoder = model.split("+")[0], model.endswith("+decoder")
    slug = "authors_formulation_decoder" if model == AUTHORS else model.replace("+", "_")
    out = pathlib.Path(output) / f"{slug}_seed{seed}"
    if (out / "metrics.json").exists() and (model == AUTHORS or (out / "model.keras").exists()):
        print(f"reusing {out}")
        return out, json.loads((out / "metrics.json").read_text())
    config = recipe.TrainConfig(model="efficient_capsnet" if model == AUTHORS else name,
                                dataset="real_digits", epochs=epochs, output_dir=str(out),
                                seed=seed, verbose=2, decoder=True if decoder else None, **RECIPE)
    if model != AUTHORS:
        return out, recipe.train(config, data=data).metrics
    # the same recipe (`kcaps_training.train.fit`, seed, data, evaluation) on a model that
    # kcaps cannot save (Lambda layers): metrics.json only
    out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(seed)
    built = authors_formulation(data.input_shape, data.num_classes, grouped=False, decoder=True)
    recipe.fit(built, data, config, output_dir=str(out), validation_data=datasets.pipeline(
        data.x_test, data.y_test, config.batch_size))
    run = recipe.read_log(str(out / "log.csv"))
    metrics = {"model": AUTHORS, "dataset": data.describe(),
               "parameters": int(built.count_params()),
               "test_accuracy": recipe.evaluate(built, data.x_test, data.y_test)["accuracy"],
               "seconds_per_epoch": float(np.mean(run["epoch_seconds"])),
               "history": {k: v for k, v in run.items() if k != "epoch"}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return out, metrics


def best_epoch_accuracy(metrics):
    """The best epoch's test accuracy in the run's log (the authors' checkpoint choice)."""
    history = metrics.get("history", {})
    keys = [k for k in history if k.startswith("val_") and k.endswith("accuracy")]
    return max(history[keys[0]]) if keys else float("nan")


def deployment(path, data, num_runs):
    """The deployment pipeline (`kcaps_tflite.pipeline`) on the saved model, int8 builds only:
    int8 size, TFLite Micro arena of the microcontroller build, agreement, host latency."""
    config = pipeline.PipelineConfig(precisions=("int8",), micro_build=True, threads=(1,),
                                     num_runs=num_runs, profile=False, verify_samples=500,
                                     micro_samples=200, targets=())
    found = pipeline.run(path / "model.keras", path / "deployment", data.x_train, data.x_test,
                         data.y_test, config=config, data_description=data.describe(),
                         log=lambda line: None)
    variants = {v["precision"]: v for v in found["variants"]}
    micro_report = found["micro"][pipeline.MICRO_BUILD_NAME]
    return {"int8 bytes": variants["int8"]["size_bytes"],
            "micro build bytes": variants[pipeline.MICRO_BUILD_NAME]["size_bytes"],
            "TFLM arena bytes": variants[pipeline.MICRO_BUILD_NAME]["arena_bytes"],
            "int8 accuracy (500)": variants["int8"]["accuracy"],
            "TFLM vs LiteRT (200)": micro_report["agreement_with_litert"],
            "tflite": found["builds"]["int8"]["file"]}


def latencies(paths, rounds, num_runs):
    runs = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            runs[name].append(benchmark.benchmark(path, num_threads=1, warmup_runs=10,
                                                  num_runs=num_runs)["inference_us"]["avg"])
    return {name: statistics.median(values) for name, values in runs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--small-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--decoder-seeds", type=int, nargs="*", default=[],
                        help="seeds of efficient_capsnet trained with its reconstruction decoder")
    parser.add_argument("--authors-seeds", type=int, nargs="*", default=[],
                        help="seeds of the authors' formulation (DepthwiseConv2D) trained with "
                             "their generator")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--num-runs", type=int, default=100)
    parser.add_argument("--output", default="runs/efficient_capsnet")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["routing", "timing", "train", "deploy"])
    args = parser.parse_args(argv)
    data = datasets.load("real_digits")
    print(f"{data.describe()}; recipe {RECIPE}, {args.epochs} epochs; "
          f"TensorFlow threads: default, {tf.config.threading.get_intra_op_parallelism_threads()}")

    if "routing" not in args.skip:
        print("\n1. Class-capsule layer alone, batch 64, 10 x 16-D outputs (median of "
              f"{args.rounds} interleaved rounds)")
        print_table(time_routing(64, args.rounds),
                    ["inputs", "layer", "forward ms", "fwd+bwd ms", "fwd+bwd vs dynamic x3"])

    if "timing" not in args.skip:
        per_epoch = time_training(data, args.rounds, args.timing_steps)
        print(f"\n2. Training seconds per epoch (125 steps of 64), from the median of "
              f"{args.rounds} interleaved rounds of {args.timing_steps} steps")
        authors = per_epoch["authors' formulation"]
        print_table([{"model": name, "s / epoch": s, "vs authors' formulation":
                      f"{authors / s:.2f}x faster"} for name, s in per_epoch.items()],
                    ["model", "s / epoch", "vs authors' formulation"])
        print(f"authors' formulation, float32 TFLite with builtin ops only: {authors_conversion()}")

    if "train" in args.skip:
        return 0
    runs = {"efficient_capsnet": args.seeds, "efficient_capsnet+decoder": args.decoder_seeds,
            AUTHORS: args.authors_seeds, "small_capsnet": args.small_seeds}
    results = {}
    for model, seeds in runs.items():
        for seed in seeds:
            results[(model, seed)] = trained(model, seed, args.epochs, data, args.output)
    rows, paths = [], {}
    for model, seeds in runs.items():
        if not seeds:
            continue
        accuracies = [results[(model, s)][1]["test_accuracy"] for s in seeds]
        best = [best_epoch_accuracy(results[(model, s)][1]) for s in seeds]
        path, metrics = results[(model, seeds[0])]
        deploy = {}
        if "deploy" not in args.skip and model != AUTHORS:
            deploy = deployment(path, data, args.num_runs)
            paths[model] = deploy.pop("tflite")
        rows.append({
            "model": model, "seeds": " ".join(str(s) for s in seeds),
            "accuracy per seed": " ".join(f"{a:.2%}" for a in accuracies),
            "median": f"{statistics.median(accuracies):.2%}",
            "best epoch per seed": " ".join(f"{a:.2%}" for a in best),
            "parameters": f"{metrics['parameters']:,}",
            "s / epoch (run)": np.mean([results[(model, s)][1]["seconds_per_epoch"]
                                        for s in seeds]),
            **{k: (f"{v:,}" if isinstance(v, int) else v) for k, v in deploy.items()}})
    latency = latencies(paths, args.rounds, args.num_runs) if paths else {}
    for row in rows:
        row["host us (int8, 1 thread)"] = latency.get(row["model"], "-")
    print(f"\n3. Trained on {data.describe()} (deployment figures for the first seed; latency: "
          f"kcaps_tflite.benchmark, median of {args.rounds} interleaved rounds of "
          f"{args.num_runs} runs)")
    print_table(rows, list(dict.fromkeys(k for row in rows for k in row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
