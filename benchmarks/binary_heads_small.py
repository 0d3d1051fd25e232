"""XnODR and XnIDR as the class-capsule layer of `small_capsnet`, against dynamic routing.

    python -m benchmarks.binary_heads_small [--epochs 10]
    python -m benchmarks.binary_heads_small --multimnist [--pairs-per-image 4] [--epochs 10]

The same backbone (small_capsnet's two convolutions and primary capsules) and recipe
(`kcaps_training.head_report.train_and_evaluate`: Adam 1e-3 x0.9 per epoch, batch 64, 2-pixel
shifts) for `CapsuleDense(routing=...)` in dynamic, xnodr, xnidr, on the real-digits split
(first 8,000 MNIST test images train, last 2,000 evaluate). Prints accuracy, the gap to dynamic
in percentage points (issue target: within 1.0), seconds per epoch, and the class-capsule kernel
size (1 bit per weight for XnODR). With `--multimnist` the same three heads train on MultiMNIST
built from the same split (`kcaps_training.multimnist.from_dataset`: train pairs overlay the 8,000
training digits, `--pairs-per-image` each; 2,000 test pairs overlay the 2,000 test digits; 36x36)
and report both-digits-correct accuracy. A small model that converges in minutes on a CPU; for the
MobileNetV2 / ResNet-50 / cnn backbones see `benchmarks/binary_heads.py`.
"""
import argparse
import os
import sys


import kcaps  # noqa: E402  (before TensorFlow: it selects Keras 2)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import binary_heads  # noqa: E402
from kcaps_training import datasets, head_report, multimnist  # noqa: E402

HEADS = ("dynamic", "xnodr", "xnidr")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multimnist", action="store_true",
                        help="train and evaluate on MultiMNIST built from the same split")
    parser.add_argument("--pairs-per-image", type=int, default=4,
                        help="MultiMNIST training pairs per training digit")
    args = parser.parse_args(argv)

    data = datasets.load_real_digits()
    input_shape, examples = data.input_shape, data
    if args.multimnist:
        examples = multimnist.from_dataset(data, args.pairs_per_image, seed=args.seed)
        input_shape = tuple(examples[0].element_spec[0].shape)
        print(f"{data.describe()} -> MultiMNIST {input_shape}: "
              f"{int(examples[0].cardinality())} train / {int(examples[1].cardinality())} test pairs")
    else:
        print(data.describe())
    rows = []
    for head in HEADS:
        tf.keras.utils.set_random_seed(args.seed)
        model = kcaps.models.small_capsnet(input_shape, data.num_classes, routing=head)
        kernel = model.get_layer("class_capsules").kernel
        bits = getattr(kernel, "precision", 32)
        row = {"head": head, "parameters": model.count_params(), "kernel_bits": bits,
               "kernel_bytes": int(np.prod(kernel.shape)) * bits // 8}
        row.update(head_report.train_and_evaluate(model, examples, args.epochs,
                                                  multimnist=args.multimnist, seed=args.seed,
                                                  verbose=2))
        rows.append(row)
        tf.keras.backend.clear_session()
    return binary_heads.report(rows, ["head", "accuracy", "gap_pp", "seconds_per_epoch",
                                      "parameters", "kernel_bits", "kernel_bytes"],
                               args.multimnist)


if __name__ == "__main__":
    sys.exit(main())
