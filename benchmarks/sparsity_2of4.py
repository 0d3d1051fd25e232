"""2:4 sparsity with tfmot on small_capsnet, converted to TFLite and timed with LiteRT's tool.

    flock /tmp/kcaps-cpu.lock python -m benchmarks.sparsity_2of4 [--epochs 8] [--finetune-epochs 3]

`small_capsnet` is trained on the first 8,000 MNIST test images; then one copy is fine-tuned
dense and one under `tfmot.sparsity.keras.prune_low_magnitude(..., sparsity_m_by_n=(2, 4))`
(with `UpdatePruningStep` and `PruningSummaries` in a plain `model.fit`), for the same epochs.
The 2:4 model is stripped (`strip_pruning`), its sparsity measured per layer, and three float
TFLite files are written: dense, 2:4 as is, and 2:4 with `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`
(the converter's flag that encodes sparse weights). Each file's accuracy is checked in the LiteRT
interpreter on the last 2,000 images, its ops are listed (is there a DENSIFY?), and its latency
is measured with `python -m ai_edge_litert.tools.benchmark_litert_model` (1 thread, XNNPACK).

What LiteRT can do with the zeros: XNNPACK's sparse inference applies only to a specific CNN
subgraph (it must start with a 3x3 stride-2 CONV_2D on 3 input channels, contain only 1x1
CONV_2D with >= 2/3 zero weights and some depthwise/elementwise ops, and end with a spatial MEAN;
tensorflow/lite/delegates/xnnpack/README.md, "Sparse Inference"). A capsule network matches none
of it (5x5 convs on 1 channel, 50% zeros, batch matmuls for the capsule projection and routing),
so no speed-up is expected; a 2:4 pattern is a hardware feature of some GPUs, not of LiteRT's CPU
kernels. The converter's sparsity flag stores sparse weights for CONV_2D behind a DENSIFY op that
is evaluated once, which can shrink the file but not the arithmetic. The script measures it.
"""
import argparse
import os
import sys


import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kcaps  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from benchmarks import litert_tool  # noqa: E402
from kcaps_training import datasets  # noqa: E402


def accuracy(model, data):
    scores = kcaps.models.classifier(model).predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(scores, axis=-1) == data.y_test))


def litert_accuracy(path, data):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for image, label in zip(data.x_test, data.y_test):
        interpreter.set_tensor(inp["index"], image[np.newaxis])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])) == label)
    return correct / len(data.x_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--num-runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/sparsity_2of4")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    tf.keras.utils.set_random_seed(args.seed)
    data = datasets.load_real_digits()
    train = datasets.pipeline(data.x_train, data.y_train, 64, shuffle=True, max_shift=2,
                              seed=args.seed)

    model = kcaps.models.small_capsnet()
    model.compile(tf.keras.optimizers.Adam(1e-3))
    model.fit(train, epochs=args.epochs, verbose=2, callbacks=[
        tf.keras.callbacks.LearningRateScheduler(lambda e: 1e-3 * 0.9 ** e)])
    weights = model.get_weights()
    lr = 1e-3 * 0.9 ** args.epochs

    sparse = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0),
        sparsity_m_by_n=(2, 4))
    sparse.compile(tf.keras.optimizers.Adam(lr))
    sparse.fit(train, epochs=args.finetune_epochs, verbose=2, callbacks=[
        tfmot.sparsity.keras.UpdatePruningStep(),
        tfmot.sparsity.keras.PruningSummaries(log_dir=os.path.join(args.output, "tensorboard"))])
    sparse = tfmot.sparsity.keras.strip_pruning(sparse)

    dense = kcaps.models.small_capsnet()
    dense.set_weights(weights)
    dense.compile(tf.keras.optimizers.Adam(lr))
    dense.fit(train, epochs=args.finetune_epochs, verbose=2)

    print(f"\nsmall_capsnet, {args.epochs} epochs, then {args.finetune_epochs} epochs dense or "
          "under 2:4 pruning; measured sparsity of the stripped 2:4 model:")
    rows = kcaps.pruning.sparsity_report(sparse)
    print("| layer | weight | shape | sparsity | reduction axis | 2:4 groups along it |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['layer']} | {row['weight']} | {row['shape']} | {row['sparsity']:.3f} | "
              f"{row['axis']} | {row['m_by_n']} |")
    print(f"all prunable weights: {kcaps.pruning.summarize(rows)['sparsity']:.3f} zeros")

    files = {}
    for name, net, optimizations in (
            ("dense", dense, ()), ("2:4", sparse, ()),
            ("2:4 + EXPERIMENTAL_SPARSITY", sparse, (tf.lite.Optimize.EXPERIMENTAL_SPARSITY,))):
        path = os.path.join(args.output, name.replace(":", "of").replace(" + ", "_") + ".tflite")
        size = litert_tool.convert(kcaps.models.classifier(net), path, optimizations=optimizations)
        files[name] = (path, size, net)

    print("\n| model | Keras acc | LiteRT acc | file KB | DENSIFY ops | LiteRT median ms | "
          "avg ms | vs dense |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name, (path, size, net) in files.items():
        timing = litert_tool.benchmark(path, num_threads=1, warmup_runs=10, num_runs=args.num_runs)
        median, average = timing["latency"]["median_ms"], timing["latency"]["avg_ms"]
        base = base or median
        densify = litert_tool.op_names(path).count("DENSIFY")
        print(f"| {name} | {accuracy(net, data):.4f} | {litert_accuracy(path, data):.4f} | "
              f"{size / 1024:.0f} | {densify} | {median:.3f} | {average:.3f} | "
              f"{base / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
