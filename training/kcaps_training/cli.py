"""The `kcaps` command line (also `python -m kcaps_training`): every subcommand's flags are here.

    kcaps train --model small_capsnet --dataset digits --epochs 15 --output runs/digits
    kcaps quickstart --output runs/quickstart        # the README's main job
    kcaps convert runs/quickstart/model.keras --precision int8 --output small_int8.tflite
    kcaps micro small_int8.tflite --export firmware/ --target mcu-256k-64k
    kcaps benchmark --graph small_int8.tflite --num_threads 1 --num_runs 50
    kcaps deploy runs/quickstart/model.keras --output runs/quickstart

The deployment commands hand paths and arrays to `kcaps_tflite` (`convert`, `micro`, `benchmark`
and `pipeline`, which `deploy` and `quickstart` run); their images come from a dataset of
`kcaps_training.datasets`: the training split calibrates int8, the evaluation split verifies.
"""
import argparse
import json
import pathlib
import sys

from kcaps_training import config as config_lib
from kcaps_training import distribute
from kcaps_training import train as recipe
from kcaps_tflite.firmware_build import FirmwareError


def add_train_arguments(parser, **defaults):
    """The flags of a training run, shared by every command that trains: one per field of
    `TrainConfig`, built from the field's metadata (`kcaps_training.config`), and
    `--cpu-replicas`. `defaults` override the config's defaults; fields with a `group` go into
    an argparse group of that title."""
    groups = {}
    for field in config_lib.flag_fields():
        meta = field.metadata
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        default = defaults.get(field.name, field.default)
        kwargs = {"help": meta.get("help")}
        if "names" in meta:
            words = {value: word for word, value in meta["names"].items()}
            kwargs.update(choices=tuple(meta["names"]), default=words[default])
        elif isinstance(field.default, bool):
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            kwargs.update(type=meta.get("parse", type(field.default)), default=default)
            if "choices" in meta:
                kwargs["choices"] = tuple(meta["choices"])
        target.add_argument("--" + field.name.replace("_", "-"), **kwargs)
        if field.name == "precision":
            parser.add_argument("--cpu-replicas", type=int, default=None,
                                help="split the CPU into this many logical devices (for "
                                     "--strategy mirrored without GPUs)")


def config_from_args(args, output_dir):
    """The `TrainConfig` of the flags of `add_train_arguments` (every field checked), then the
    CPU split that `--cpu-replicas` asks for (before TensorFlow starts its runtime)."""
    values = {}
    for field in config_lib.flag_fields():
        value = getattr(args, field.name)
        if "names" in field.metadata:
            value = field.metadata["names"][value]
        values[field.name] = value
    config = config_lib.TrainConfig(output_dir=output_dir, **values)
    if args.cpu_replicas:
        distribute.split_cpu(args.cpu_replicas)
    return config


def print_report(metrics, output_dir):
    print(f"\n== {metrics['model']} on {metrics['dataset']}")
    print(f"parameters        {metrics['parameters']:,}")
    print(f"test accuracy     {metrics['test_accuracy']:.4f}")
    if metrics.get("seconds_per_epoch") is not None:
        print(f"seconds / epoch   {metrics['seconds_per_epoch']:.1f}")
    print(f"outputs           {output_dir}/ (model.keras, metrics.json, log.csv, "
          f"training_curves.png, tensorboard/)")


def _train(config, args, data=None):
    """`kcaps train`'s run (a finished one is reported, not trained again)."""
    result = recipe.train(config, data=data, overwrite=args.overwrite)
    if result.already_finished:
        print(f"{config.output_dir}: already finished with this config; nothing to train "
              f"(--overwrite trains it again from epoch 1)")
    print_report(result.metrics, config.output_dir)


def cmd_train(args):
    _train(config_from_args(args, args.output), args)  # every field checked before TF starts
    return 0


def cmd_quickstart(args):
    """The main job: train, evaluate, save; then the deployment pipeline on the saved file."""
    from kcaps_training import datasets

    config = config_from_args(args, args.output)
    pipeline_config = _pipeline_config(args)  # checked before training starts
    data = datasets.load(config.dataset, config.data_dir)
    _train(config, args, data)
    saved = pathlib.Path(config.output_dir) / "model.keras"
    print(f"\n== deployment of {saved}: convert, verify in LiteRT, TFLite Micro, benchmark")
    _deploy(saved, data, config.output_dir, pipeline_config, name=config.model)
    return 0


OVERWRITE_HELP = ("delete the run in --output and train from epoch 1 (without it, a finished run "
                  "is not trained again and an interrupted one resumes)")


# ---- deployment: convert, micro, benchmark, deploy (libraries in kcaps_tflite) ----

def _bool(text):
    value = str(text).lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_data_arguments(parser):
    from kcaps_training import datasets

    parser.add_argument("--dataset", default="digits",
                        help="where representative and verification images come from: "
                             f"{', '.join(datasets.NAMES)} (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="idx or tfds directory")


def _add_firmware_arguments(parser):
    from kcaps_tflite import pipeline

    defaults = pipeline.PipelineConfig
    parser.add_argument("--firmware", default=defaults.firmware, choices=pipeline.FIRMWARE_MODES,
                        help="run the microcontroller build as firmware on an emulated Cortex-M "
                             "(kcaps_tflite.firmware): off, auto (when Arm GCC and QEMU are "
                             "here) or on (default: %(default)s)")
    parser.add_argument("--firmware-board", default=defaults.firmware_board,
                        help="QEMU board (default: %(default)s)")
    parser.add_argument("--firmware-kernels", default=defaults.firmware_kernels,
                        help="TFLite Micro kernels of the firmware (default: %(default)s)")


def _pipeline_config(args, **fields):
    """The pipeline's config from the flags, checked (a missing firmware toolchain with
    `--firmware on` included) before any data is loaded or any model trained."""
    from kcaps_tflite import pipeline

    config = pipeline.PipelineConfig(firmware=args.firmware, firmware_board=args.firmware_board,
                                     firmware_kernels=args.firmware_kernels, **fields)
    pipeline.firmware_stage(config)
    return config


def _deploy(model_path, data, output_dir, config, name=None):
    from kcaps_tflite import pipeline

    return pipeline.run(model_path, output_dir, data.x_train, data.x_test, data.y_test, config,
                        name=name, data_description=data.describe())


def cmd_convert(args):
    from kcaps_tflite import convert, verify
    from kcaps_training import datasets

    if args.for_micro and args.precision != "int8":
        raise ValueError(f"--for-micro builds an int8 model; got --precision {args.precision}")
    data = datasets.load(args.dataset, args.data_dir)
    model = convert.inference_model(args.model)
    representative = convert.calibration_sample(data.x_train, args.calibration_samples, args.seed)
    flatbuffer = convert.convert(model, args.precision, representative_data=representative,
                                 **(convert.MICRO_BUILD if args.for_micro else {}))
    x, y = data.x_test[:args.verify_samples], data.y_test[:args.verify_samples]
    check = verify.verify(model, flatbuffer, x, y, precision=args.precision,
                          min_agreement=args.min_agreement)
    output = args.output or str(pathlib.Path(args.model).with_suffix("")) + \
        f"_{args.precision}.tflite"
    convert.save(flatbuffer, output)
    print(f"{output}: {len(flatbuffer):,} bytes, {args.precision}")
    print(f"verified in {'LCE' if args.precision == 'binary' else 'LiteRT'} on {check.samples} "
          f"{data.name} images: top-1 agreement with Keras {check.agreement:.2%} (threshold "
          f"{check.min_agreement:.0%}), max capsule-length difference "
          f"{check.max_length_difference:.3g}, accuracy {check.accuracy:.2%} "
          f"(Keras {check.keras_accuracy:.2%})")
    return 0


def cmd_micro(args):
    from kcaps_tflite import c_export, files, micro
    from kcaps_training import datasets

    x = y = None
    if args.dataset:
        data = datasets.load(args.dataset, args.data_dir)
        x, y = data.x_test[:args.samples], data.y_test[:args.samples]
    result = micro.analyze(args.model, x, y, targets=args.target or tuple(micro.TARGETS),
                           arena_size=args.arena_size)
    print(f"{args.model}: {result.model_bytes:,} bytes; TFLite Micro arena "
          f"{result.arena_bytes:,} bytes "
          f"({'smallest that works' if args.arena_size is None else 'given'})")
    print("operators (all have TFLite Micro kernels): " +
          ", ".join(f"{k} x{v}" for k, v in result.op_counts.items()))
    if result.float_operators:
        print(f"computed in float inside the int8 model: {', '.join(result.float_operators)}")
    if result.samples:
        print(f"top-1 agreement with LiteRT {result.agreement_with_litert:.2%} (builtin kernels "
              f"{result.agreement_with_litert_builtin:.2%}) on {result.samples} images (accuracy "
              f"{result.accuracy:.2%}, LiteRT {result.litert_accuracy:.2%})")
    for b in result.budgets:
        print(f"{b['target']:14s} flash {b['model_bytes'] / 1024:7.1f} / {b['flash_bytes'] // 1024}"
              f" KB, SRAM {b['arena_bytes'] / 1024:6.1f} / {b['sram_bytes'] // 1024} KB: "
              f"{'fits' if b['fits'] else 'does NOT fit'}")
    if args.export:
        header, source = c_export.export_c(args.model, args.export)
        print(f"C source: {header}, {source}")
    if args.json:
        files.write_text(args.json, json.dumps(result.as_dict(), indent=2))
    return 0


def cmd_benchmark(args):
    """Run the benchmark tool (or read a saved output with --parse), print in the tool's
    shape, write the JSON."""
    from kcaps_tflite import benchmark

    if args.parse:
        result = benchmark.parse_output_file(args.parse, args.graph, args.num_threads,
                                             args.warmup_runs, args.num_runs, args.use_xnnpack)
    else:
        result = benchmark.benchmark(args.graph, num_threads=args.num_threads,
                                     warmup_runs=args.warmup_runs, num_runs=args.num_runs,
                                     use_xnnpack=args.use_xnnpack,
                                     enable_op_profiling=args.enable_op_profiling, tool=args.tool)
    print(benchmark.format_result(result))
    if result.get("op_profile"):
        print(result["op_profile"])
    path = benchmark.write_result(result, args.json or f"{args.graph}.benchmark.json")
    print(f"result: {path}")
    return 0


def cmd_deploy(args):
    from kcaps_training import datasets

    config = _pipeline_config(args, precisions=tuple(args.precisions), num_runs=args.num_runs,
                              micro_samples=args.micro_samples)
    data = datasets.load(args.dataset, args.data_dir)
    _deploy(args.model, data, args.output, config)
    return 0


def cmd_firmware(args):
    from kcaps_tflite import firmware
    from kcaps_training import datasets

    firmware.BOARDS.get(args.board)  # unknown board: the error lists the valid ones
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1; got {args.samples}")
    data = datasets.load(args.dataset, args.data_dir)
    try:
        report = firmware.run(args.model, args.board, args.kernels, data.x_test[:args.samples],
                              data.y_test[:args.samples], output_dir=args.output,
                              json_path=args.json, tflm_dir=args.tflm_dir, timeout=args.timeout,
                              cross_check=args.cross_check)
    except firmware.FirmwareError as error:  # toolchain missing, crash, hang, build failure
        print(f"kcaps firmware: error: {error}", file=sys.stderr)
        return 3
    print("\n".join(firmware.format_report(report)))
    if args.json:
        print(f"report: {args.json}")
    return 0


def add_deployment_commands(commands):
    """`convert`, `micro`, `benchmark`, `deploy`."""
    from kcaps_tflite import convert, micro, pipeline, verify

    c = commands.add_parser("convert", help="convert a Keras model to .tflite and verify it",
                            description="Convert a saved Keras model (pruning wrappers stripped, "
                                        "decoder dropped) to .tflite and verify it in LiteRT.")
    c.add_argument("model", help=".keras / .h5 file or SavedModel directory")
    c.add_argument("--precision", default="int8", choices=convert.PRECISIONS)
    c.add_argument("--output", default=None, help="the .tflite to write "
                                                  "(default: <model>_<precision>.tflite)")
    _add_data_arguments(c)
    c.add_argument("--calibration-samples", type=int,
                   default=convert.DEFAULT_CALIBRATION_SAMPLES)
    c.add_argument("--verify-samples", type=int, default=1000)
    c.add_argument("--min-agreement", type=float, default=None,
                   help="top-1 agreement below which the conversion fails (default per "
                        "precision: " + ", ".join(f"{k} {v:.0%}%"  # argparse: %% prints %
                                                  for k, v in verify.MIN_AGREEMENT.items()) + ")")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--for-micro", action="store_true",
                   help="int8 for a microcontroller: no XNNPACK forms (smaller file and arena), "
                        "SUMs as MEAN x count (TFLite Micro then gives the top-1 of TFLite's "
                        "builtin kernels)")
    c.set_defaults(run=cmd_convert)

    m = commands.add_parser("micro", help="run an int8 .tflite in TFLite Micro: arena, budget",
                            description="Op coverage, smallest arena, budgets and agreement with "
                                        "LiteRT of an int8 model in TFLite Micro; C export.")
    m.add_argument("model", help="an int8 .tflite file")
    m.add_argument("--dataset", default="digits",
                   help="images for the agreement with LiteRT ('' to skip) (default: %(default)s)")
    m.add_argument("--data-dir", default=None)
    m.add_argument("--samples", type=int, default=200)
    m.add_argument("--arena-size", type=int, default=None,
                   help="run with this arena (bytes) instead of the smallest that works")
    m.add_argument("--target", action="append", default=None, choices=list(micro.TARGETS),
                   help="budget target (repeatable; default: all)")
    m.add_argument("--export", default=None, help="write model_data.h / .cc into this directory")
    m.add_argument("--json", default=None, help="write the findings as JSON")
    m.set_defaults(run=cmd_micro)

    b = commands.add_parser("benchmark", help="the TFLite benchmark tool's measurement",
                            description="Benchmark a .tflite model the way TFLite's benchmark "
                                        "tool does, with the tool's flags (`--flag value` or "
                                        "`--flag=value`) (kcaps_tflite.benchmark).")
    b.add_argument("--graph", required=True, help="the .tflite model")
    b.add_argument("--num_threads", type=int, default=1,
                   help="CPU threads (-1: the platform default) (default: %(default)s)")
    b.add_argument("--warmup_runs", type=int, default=1, help="(default: %(default)s)")
    b.add_argument("--num_runs", type=int, default=50, help="(default: %(default)s)")
    b.add_argument("--use_xnnpack", type=_bool, default=True,
                   help="false: TFLite's builtin kernels (default: %(default)s)")
    b.add_argument("--enable_op_profiling", type=_bool, default=False,
                   help="print the per-operator profile (default: %(default)s)")
    b.add_argument("--tool", default=None,
                   help="a benchmark_model binary to run instead of the host engine "
                        "(default: one on PATH, else ai-edge-litert's tool)")
    b.add_argument("--json", default=None, help="write the result here (default: "
                                                "<graph>.benchmark.json)")
    b.add_argument("--parse", default=None, metavar="OUTPUT.txt",
                   help="do not run: read a saved benchmark_model output (e.g. pulled from a "
                        "phone by tflite/android_benchmark.sh) into the same JSON")
    b.set_defaults(run=cmd_benchmark)

    defaults = pipeline.PipelineConfig
    d = commands.add_parser("deploy", help="convert every precision, verify, TFLite Micro, "
                                           "benchmark, report",
                            description=pipeline.__doc__.split("\n")[0])
    d.add_argument("model", help=".keras / .h5 file or SavedModel directory")
    d.add_argument("--output", required=True, help="directory for tflite/, micro/, report.md ...")
    _add_data_arguments(d)
    d.add_argument("--precisions", nargs="+", default=list(defaults.precisions),
                   choices=convert.PRECISIONS, help="the phone variants (the microcontroller "
                                                    "int8 build is made too)")
    d.add_argument("--num-runs", type=int, default=defaults.num_runs)
    d.add_argument("--micro-samples", type=int, default=defaults.micro_samples)
    _add_firmware_arguments(d)
    d.set_defaults(run=cmd_deploy)

    from kcaps_tflite import firmware, firmware_build

    f = commands.add_parser("firmware", help="build an int8 .tflite as TFLite Micro firmware, "
                                             "run it on an emulated Cortex-M, measure",
                            description=firmware.__doc__.split("\n")[0])
    f.add_argument("model", help="an int8 .tflite file")
    f.add_argument("--board", default="mps2-an386",
                   help=f"QEMU board: {', '.join(firmware.BOARDS)} (default: %(default)s)")
    f.add_argument("--kernels", default="cmsis_nn", choices=firmware_build.KERNEL_SETS,
                   help="TFLite Micro kernels (default: %(default)s)")
    f.add_argument("--samples", type=int, default=20, help="test images run (default: 20)")
    f.add_argument("--dataset", default="real_digits",
                   help="images to run (default: %(default)s)")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--output", default=None,
                   help="directory for the build, ELF, map and run files (default: a temp dir)")
    f.add_argument("--json", default=None, help="write the firmware report as JSON")
    f.add_argument("--tflm-dir", default=None,
                   help="TFLite Micro tree (default: $KCAPS_TFLM_DIR, else ../shared/tflm)")
    f.add_argument("--timeout", type=float, default=300,
                   help="seconds before a run counts as a hang (default: %(default)s)")
    f.add_argument("--cross-check", action="store_true",
                   help="also count instructions with a QEMU TCG plugin built here")
    f.set_defaults(run=cmd_firmware)


# ---- sweep, heads, prune (their work in kcaps_training.sweep, .head_report, .prune_command) ----

def add_sweep_command(commands):
    from kcaps_training import sweep

    parser = commands.add_parser(
        "sweep", help="train a grid of configurations and plot accuracy against training time",
        description=sweep.__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog=f"grid keys: {', '.join(sweep.GRID_KEYS)}")
    add_train_arguments(parser)
    parser.add_argument("--grid", action="append", nargs="+", required=True, metavar="KEY=V1,V2",
                        help="one grid (repeat for several): KEY=V1,V2,... entries")
    parser.add_argument("--output", default="runs/sweep", help="sweep directory")
    parser.add_argument("--time-metric", choices=sweep.TIME_KEYS, default="fastrcaps_seconds")
    parser.add_argument("--accuracy-metric", choices=sweep.ACCURACY_KEYS,
                        default="best_accuracy")
    parser.set_defaults(run=cmd_sweep, verbose=2)


def cmd_sweep(args):
    from kcaps_training import sweep

    base = config_from_args(args, output_dir=args.output)
    grids = [sweep.parse_grid(tokens) for tokens in args.grid]
    rows = sweep.run_sweep(base, grids, args.output, time_key=args.time_metric,
                           accuracy_key=args.accuracy_metric)
    sweep.print_rows(rows, args.time_metric, args.accuracy_metric)
    print(f"\noutputs: {args.output}/sweep.csv, {args.output}/pareto.png, {args.output}/points/")
    return 0


def add_heads_command(commands):
    import kcaps
    from kcaps_training import head_report

    parser = commands.add_parser(
        "heads", help="parameters, MACs, size (and accuracy) of backbone + capsule-head models",
        description=head_report.__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default=",".join(kcaps.models.BACKBONES),
                        help="comma-separated: mobilenetv2, resnet50, cnn (default: all)")
    parser.add_argument("--heads", default=",".join(kcaps.models.HEADS),
                        help="comma-separated: dense, dynamic, xnodr, xnidr (default: all)")
    parser.add_argument("--input-shape", default="224,224,3",
                        help="height,width,channels without a dataset (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=10, help="classes without a dataset")
    parser.add_argument("--dataset", default=None,
                        help="train and evaluate on this dataset (see `kcaps train --help`)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--multimnist", action="store_true",
                        help="train and evaluate on MultiMNIST built from --dataset")
    parser.add_argument("--train-samples", type=int, default=None,
                        help="use only the first N training images (quick runs)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--upsample", type=int, default=1)
    parser.add_argument("--bn-momentum", type=float, default=0.99,
                        help="momentum of the head's BatchNorm (0.9 for short runs)")
    parser.add_argument("--routing-iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0)
    parser.set_defaults(run=head_report.cmd_heads)


def add_prune_command(commands):
    import kcaps
    from kcaps_training import prune_command

    parser = commands.add_parser(
        "prune", help="channel-prune a saved model and fine-tune it",
        description="Remove backbone channels / capsule types / capsules (kcaps.pruning), "
                    "rebuild the smaller model, fine-tune it with model.fit, save and report.")
    parser.add_argument("model_path", help="a saved .keras model")
    parser.add_argument("--ratio", type=float, default=None,
                        help="ratio for every Conv2D and PrimaryCapsules layer, in [0, 1)")
    parser.add_argument("--layer-ratio", action="append", default=[], metavar="LAYER=RATIO",
                        help="ratio of one layer (repeatable; overrides --ratio)")
    parser.add_argument("--criterion", default="l1", choices=kcaps.pruning.CRITERIA)
    parser.add_argument("--samples", type=int, default=256,
                        help="training images for the chip/activity criteria")
    parser.add_argument("--dataset", default="real_digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--max-shift", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--output", default="runs/pruned")
    parser.set_defaults(run=prune_command.cmd_prune)


def build_parser():
    parser = argparse.ArgumentParser(prog="kcaps", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a capsule network",
                                description="Train a kcaps model with model.fit, save it, report.")
    add_train_arguments(train)
    train.add_argument("--output", default=config_lib.TrainConfig.output_dir,
                       help="output directory")
    train.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    train.set_defaults(run=cmd_train)

    quick = commands.add_parser(
        "quickstart", help="the main job: train the default model offline and report",
        description="Train small_capsnet on scikit-learn's embedded digits (no download), "
                    "evaluate and save it, then run the deployment pipeline on the saved file: "
                    "convert it to TFLite in every precision and the microcontroller int8 build, "
                    "verify each in LiteRT, run both int8 builds in TFLite Micro, benchmark with "
                    "the TFLite benchmark tool and write report.md.")
    add_train_arguments(quick, model="small_capsnet", dataset="digits", epochs=30)
    quick.add_argument("--output", default="runs/quickstart", help="output directory")
    quick.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _add_firmware_arguments(quick)
    quick.set_defaults(run=cmd_quickstart, verbose=2)

    add_sweep_command(commands)
    add_heads_command(commands)
    add_prune_command(commands)
    add_deployment_commands(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"kcaps {args.command}: error: {error}", file=sys.stderr)
        return 2
    except FirmwareError as error:  # `--firmware on`: a build that fails, a crash, a hang
        print(f"kcaps {args.command}: firmware error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
