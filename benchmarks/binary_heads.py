"""XnODR and XnIDR heads against the dynamic-routing head on the same backbone (real digits).

    python -m benchmarks.binary_heads [--backbone cnn] [--epochs 3]                # real digits
    python -m benchmarks.binary_heads --multimnist [--epochs 3] [--train-samples 4000]
    python -m benchmarks.binary_heads --heads xnodr,dynamic --epochs 30     # a subset of heads

Trains `backbone_capsnet(backbone, head)` for head in dynamic, xnodr, xnidr with one recipe
(`kcaps_training.head_report.train_and_evaluate`: Adam 1e-3 x0.9 per epoch, batch 64, margin loss,
2-pixel shifts on single digits; head BatchNorm momentum 0.9 for these short runs) on the
real-digits split (first 8,000 MNIST test images train, last 2,000 evaluate), or on MultiMNIST
built from it (one pair per digit; both-digits-correct accuracy). Prints accuracy, the gap to
the dynamic head in percentage points (target: within 1.0 on real digits), seconds per epoch
(Keras training cost of each head), and the size of the class-capsule kernel: 1 bit per weight
for XnODR (32x smaller), float32 for the others.
"""
import argparse
import os
import sys


import kcaps  # noqa: E402  (first: Keras 2 behind tf.keras, before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from kcaps_training import datasets, head_report  # noqa: E402

HEADS = ("dynamic", "xnodr", "xnidr")


def kernel_bytes(backbone, head, input_shape):
    kernel = kcaps.models.backbone_capsnet(backbone, head, input_shape, 10).get_layer(
        "class_capsules").kernel
    bits = getattr(kernel, "precision", 32)
    return int(np.prod(kernel.shape)) * bits // 8, bits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="cnn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--multimnist", action="store_true")
    parser.add_argument("--train-samples", type=int, default=None,
                        help="first N training digits only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", default=",".join(HEADS),
                        help="comma-separated heads; the gap is measured against dynamic")
    args = parser.parse_args(argv)
    heads = head_report.parse_names(args.heads)
    if "dynamic" not in heads or not set(heads) <= set(HEADS):
        parser.error(f"--heads must list dynamic and any of {', '.join(HEADS)}, got {args.heads!r}")

    data = datasets.load_real_digits()
    if args.train_samples:
        data.x_train, data.y_train = data.x_train[:args.train_samples], data.y_train[:args.train_samples]
    print(data.describe() + (" -> MultiMNIST, 1 pair per digit" if args.multimnist else ""))
    rows = head_report.head_report([args.backbone], heads, data=data, multimnist=args.multimnist,
                                   epochs=args.epochs, seed=args.seed, verbose=2, bn_momentum=0.9)
    input_shape = (36, 36, 1) if args.multimnist else data.input_shape
    for row in rows:
        row["kernel_bytes"], row["kernel_bits"] = kernel_bytes(args.backbone, row["head"], input_shape)
        tf.keras.backend.clear_session()
    return report(rows, ["backbone", "head", "accuracy", "gap_pp", "seconds_per_epoch",
                         "kernel_bits", "kernel_bytes", "binary_params", "binary_macs",
                         "float_macs"], args.multimnist)


def report(rows, columns, multimnist):
    """Add each head's gap to the dynamic head (`gap_pp`), print the table and, on single digits,
    the issue's verdict (within 1.0 pp); return the exit status (MultiMNIST: figures only)."""
    baseline = next(row["accuracy"] for row in rows if row["head"] == "dynamic")
    for row in rows:
        row["gap_pp"] = 100 * (row["accuracy"] - baseline)
    print()
    print_table(rows, columns)
    if multimnist:
        return 0
    within = all(abs(row["gap_pp"]) <= 1.0 for row in rows)
    print(f"\nxnodr and xnidr within 1.0 pp of dynamic: {within}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
