"""The `kcaps` command line (also `python -m kcaps_training`).

    kcaps train --model small_capsnet --dataset digits --epochs 15 --output runs/digits
    kcaps quickstart --output runs/quickstart        # the README's main job
"""
import argparse
import importlib
import sys

from kcaps_training import distribute, fast_training
from kcaps_training import train as recipe

_DEFAULTS = recipe.TrainConfig.__dataclass_fields__


def _default(field):
    return _DEFAULTS[field].default


def add_train_arguments(parser, model=None, dataset=None, epochs=None):
    """The flags of a training run, shared by every command that trains."""
    parser.add_argument("--model", default=model or _default("model"),
                        help="model builder from kcaps.models (default: %(default)s)")
    parser.add_argument("--dataset", default=dataset or _default("dataset"),
                        help="digits (offline), real_digits, idx, mnist, fashion_mnist, cifar10, "
                             "smallnorb (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="idx directory or tfds data_dir (real_digits: ../shared/data/mnist)")
    parser.add_argument("--epochs", type=int, default=epochs or _default("epochs"))
    parser.add_argument("--batch-size", type=int, default=_default("batch_size"))
    parser.add_argument("--learning-rate", type=float, default=_default("learning_rate"))
    parser.add_argument("--lr-decay", type=float, default=_default("lr_decay"),
                        help="learning-rate factor per epoch (default: %(default)s)")
    parser.add_argument("--max-shift", type=int, default=_default("max_shift"),
                        help="random shift augmentation in pixels (default: %(default)s)")
    parser.add_argument("--routing-iterations", type=int, default=_default("routing_iterations"))
    parser.add_argument("--seed", type=int, default=_default("seed"))
    parser.add_argument("--verbose", type=int, default=_default("verbose"),
                        help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    parser.add_argument("--strategy", default=_default("strategy"),
                        help="default, mirrored (all GPUs, else all logical CPUs) or multiworker "
                             "(configured by TF_CONFIG) (default: %(default)s)")
    parser.add_argument("--precision", default=_default("precision"),
                        help="float32, mixed_float16, mixed_bfloat16 or auto (float16 on GPU, "
                             "bfloat16 on CPU) (default: %(default)s)")
    parser.add_argument("--cpu-replicas", type=int, default=None,
                        help="split the CPU into this many logical devices (for --strategy mirrored "
                             "without GPUs)")
    fast_training.add_arguments(parser)


def config_from_args(args, output_dir):
    return recipe.TrainConfig(
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lr_decay=args.lr_decay,
        max_shift=args.max_shift, routing_iterations=args.routing_iterations,
        output_dir=output_dir, seed=args.seed, verbose=args.verbose, strategy=args.strategy,
        precision=args.precision, **fast_training.config_kwargs(args))


def print_report(metrics, output_dir):
    print(f"\n== {metrics['model']} on {metrics['dataset']}")
    print(f"parameters        {metrics['parameters']:,}")
    print(f"test accuracy     {metrics['test_accuracy']:.4f}")
    if metrics.get("seconds_per_epoch") is not None:
        print(f"seconds / epoch   {metrics['seconds_per_epoch']:.1f}")
    print(f"outputs           {output_dir}/ (model.keras, metrics.json, log.csv, "
          f"training_curves.png, tensorboard/)")


def cmd_train(args):
    config = config_from_args(args, args.output)  # checks every field before TensorFlow starts
    if args.cpu_replicas:
        distribute.split_cpu(args.cpu_replicas)
    result = recipe.train(config)
    print_report(result.metrics, config.output_dir)
    return 0


def cmd_quickstart(args):
    """The main job: train, evaluate, save, then deploy (kcaps_training.deploy) and report."""
    from kcaps_training import datasets, deploy

    config = config_from_args(args, args.output)
    data = datasets.load(config.dataset, config.data_dir)
    result = recipe.train(config, data=data)
    print_report(result.metrics, config.output_dir)
    print("\n== deployment: convert, verify in LiteRT, TFLite Micro, benchmark")
    deploy.deploy(result.model, data, config.output_dir, name=config.model)
    return 0


# Modules that add subcommands: each has `register(commands)` taking the argparse subparsers.
# Features add their command in their own module and one line here.
COMMAND_MODULES = ("kcaps_training.sweep", "kcaps_training.head_report", "kcaps_training.prune_command",
                   "kcaps_training.deploy_cli")


def build_parser():
    parser = argparse.ArgumentParser(prog="kcaps", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a capsule network",
                                description="Train a kcaps model with model.fit, save it, report.")
    add_train_arguments(train)
    train.add_argument("--output", default=_default("output_dir"), help="output directory")
    train.set_defaults(run=cmd_train)

    quick = commands.add_parser(
        "quickstart", help="the main job: train the default model offline and report",
        description="Train small_capsnet on scikit-learn's embedded digits (no download), "
                    "evaluate and save it, then convert it to TFLite in every precision, verify "
                    "each in LiteRT, run int8 in TFLite Micro, benchmark with the TFLite "
                    "benchmark tool and write report.md.")
    add_train_arguments(quick, model="small_capsnet", dataset="digits", epochs=30)
    quick.add_argument("--output", default="runs/quickstart", help="output directory")
    quick.set_defaults(run=cmd_quickstart, verbose=2)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"kcaps {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
