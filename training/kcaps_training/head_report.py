"""`kcaps heads`: the XnODR / XnIDR paper's table for backbone + head combinations.

    kcaps heads --backbones mobilenetv2,resnet50 --input-shape 224,224,3
    kcaps heads --backbones cnn --heads dynamic,xnodr,xnidr --dataset real_digits --epochs 3
    kcaps heads --backbones cnn --dataset real_digits --multimnist --epochs 3

For each (backbone, head) of `kcaps.models.backbone_capsnet` it prints trainable, binary and
float parameters, binary and float MACs per image (larq's profiler, kcaps layers counting their
own, see `kcaps.complexity`), the model size in bytes at deployment precision (1 bit per binary
weight, float32 otherwise, plus XnODR's float scaling factors), and, when a dataset is given,
the test accuracy after training every model with the recipe of `kcaps train`
(`kcaps_training.train.fit`: Adam, learning rate x0.9 per epoch, margin loss, shift
augmentation on single digits). With `--multimnist` the models
train and test on MultiMNIST built from the dataset (`kcaps_training.multimnist`), and the accuracy is
both-digits-correct.
"""
import numpy as np
import tensorflow as tf

import kcaps
from kcaps_training import datasets
from kcaps_training import multimnist as multimnist_lib
from kcaps_training import train as recipe

COLUMNS = ("backbone", "head", "trainable_params", "binary_params", "float_params",
           "binary_macs", "float_macs", "deployment_bytes", "accuracy", "seconds_per_epoch")


def train_and_evaluate(model, data, epochs, multimnist=False, batch_size=64, learning_rate=1e-3,
                       lr_decay=0.9, max_shift=2, seed=0, verbose=0):
    """Train `model` with the recipe (`kcaps_training.train.fit`) on `data`; return accuracy and timing.

    `data` is a `kcaps_training.datasets.Dataset`, or with `multimnist=True` a pair of MultiMNIST
    `tf.data` datasets `(train, test)` (no shift augmentation: the digits are already shifted).
    Accuracy (`kcaps_training.train.evaluate`) is top-1 of the class scores, or
    both-digits-correct on MultiMNIST.
    """
    config = recipe.TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                lr_decay=lr_decay, max_shift=max_shift, seed=seed,
                                verbose=verbose)
    if multimnist:
        train, test = data
        x_test, y_test = multimnist_lib.to_numpy(test)
        metric = kcaps.metrics.MultiDigitAccuracy
    else:
        train, x_test, y_test, metric = data, data.x_test, data.y_test, None
    history = recipe.fit(model, train, config, metric=metric)
    evaluation = recipe.evaluate(model, x_test, y_test, metric)
    return {**evaluation, "seconds_per_epoch": float(np.mean(history["epoch_seconds"]))}


def head_report(backbones=kcaps.models.BACKBONES, heads=kcaps.models.HEADS, input_shape=None,
                num_classes=None, data=None, multimnist=False, epochs=3, train_pairs_per_image=1,
                seed=0, verbose=0, **model_kwargs):
    """One row (a dict of `COLUMNS`) per (backbone, head).

    Without `data`, models are only built (for `input_shape` and `num_classes`) and profiled.
    With a `kcaps_training.datasets.Dataset`, each is trained for `epochs` and evaluated, on the
    dataset itself or, with `multimnist`, on MultiMNIST built from it. `model_kwargs` go to
    `backbone_capsnet` (e.g. `upsample`, `bn_momentum`, `routing_iterations`).
    """
    for name, values, valid in (("backbone", backbones, kcaps.models.BACKBONES),
                                ("head", heads, kcaps.models.HEADS)):
        unknown = [v for v in values if v not in valid]
        if unknown or not values:
            raise ValueError(f"unknown {name} {unknown or values!r}; valid {name}s: {', '.join(valid)}")
    examples = None
    if data is not None:
        if multimnist:
            examples = multimnist_lib.from_dataset(data, train_pairs_per_image, seed=seed)
            input_shape = tuple(examples[0].element_spec[0].shape)
        else:
            examples, input_shape = data, data.input_shape
        num_classes = data.num_classes
    input_shape = tuple(input_shape or (224, 224, 3))
    rows = []
    for backbone in backbones:
        for head in heads:
            tf.keras.utils.set_random_seed(seed)
            model = kcaps.models.backbone_capsnet(backbone, head, input_shape, num_classes or 10,
                                                  **model_kwargs)
            row = {"backbone": backbone, "head": head, **kcaps.complexity.profile(model)}
            if examples is not None:
                row.update(train_and_evaluate(model, examples, epochs, multimnist=multimnist,
                                              seed=seed, verbose=verbose))
            rows.append(row)
            tf.keras.backend.clear_session()
    return rows


def format_table(rows):
    """The rows as a markdown table (counts with thousands separators)."""
    columns = [c for c in COLUMNS if any(row.get(c) is not None for row in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if isinstance(value, float):
                cells.append(f"{value:.4f}" if column == "accuracy" else f"{value:.1f}")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            else:
                cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_names(text):
    """"a, b,c" -> ("a", "b", "c"): the comma-separated lists of `kcaps heads` and the benchmarks."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _shape(text):
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise ValueError(f"--input-shape must be height,width,channels, got {text!r}") from None


def cmd_heads(args):
    data = None
    if args.dataset is not None:
        data = datasets.load(args.dataset, args.data_dir)
        if args.train_samples:
            data.x_train, data.y_train = data.x_train[:args.train_samples], data.y_train[:args.train_samples]
        print(data.describe() + (" -> MultiMNIST" if args.multimnist else ""))
    elif args.multimnist:
        raise ValueError("--multimnist needs --dataset (the MNIST-format source of the digits)")
    rows = head_report(
        parse_names(args.backbones), parse_names(args.heads), _shape(args.input_shape), args.classes, data,
        multimnist=args.multimnist, epochs=args.epochs, seed=args.seed, verbose=args.verbose,
        upsample=args.upsample, bn_momentum=args.bn_momentum,
        routing_iterations=args.routing_iterations)
    print(format_table(rows))
    return 0
