"""Deployment subcommands of `kcaps`: convert, micro, benchmark, deploy.

    kcaps convert runs/quickstart/model.keras --precision int8 --output small_int8.tflite
    kcaps micro small_int8.tflite --export firmware/ --target mcu-256k-64k
    kcaps benchmark --graph small_int8.tflite --num_threads 1 --num_runs 50
    kcaps deploy runs/quickstart/model.keras --output runs/quickstart

`convert` and `micro` draw their data (representative images for int8, real images for the
checks) from a dataset of `kcaps_training.datasets`: the training split calibrates, the evaluation
split verifies.
"""
import json
import pathlib

from kcaps_tflite import benchmark, c_export, convert, files, micro, verify
from kcaps_training import datasets, deploy


def _add_data_arguments(parser):
    parser.add_argument("--dataset", default="digits",
                        help="where representative and verification images come from: "
                             f"{', '.join(datasets.NAMES)} (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="idx or tfds directory")


def cmd_convert(args):
    if args.for_micro and args.precision != "int8":
        raise ValueError(f"--for-micro builds an int8 model; got --precision {args.precision}")
    data = datasets.load(args.dataset, args.data_dir)
    model = convert.inference_model(args.model)
    representative = deploy.calibration_sample(data.x_train, args.calibration_samples, args.seed)
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
    x = y = None
    if args.dataset:
        data = datasets.load(args.dataset, args.data_dir)
        x, y = data.x_test[:args.samples], data.y_test[:args.samples]
    result = micro.analyze(args.model, x, y, targets=args.target or tuple(micro.TARGETS),
                           arena_size=args.arena_size)
    print(f"{args.model}: {result.model_bytes:,} bytes; TFLite Micro arena "
          f"{result.arena_bytes:,} bytes ({'smallest that works' if args.arena_size is None else 'given'})")
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


def cmd_deploy(args):
    data = datasets.load(args.dataset, args.data_dir)
    config = deploy.DeployConfig(precisions=tuple(args.precisions), num_runs=args.num_runs,
                                 micro_samples=args.micro_samples)
    deploy.deploy(args.model, data, args.output, config)
    return 0


def register(commands):
    """Add the deployment subcommands to `kcaps`'s argparse subparsers."""
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
                        "precision: " + ", ".join(f"{k} {v:.0%}"
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
                            description=benchmark.__doc__.split("\n")[0])
    benchmark.add_arguments(b)
    b.set_defaults(run=benchmark.run_command)

    d = commands.add_parser("deploy", help="convert every precision, verify, TFLite Micro, "
                                           "benchmark, report",
                            description=deploy.__doc__.split("\n")[0])
    d.add_argument("model", help=".keras / .h5 file or SavedModel directory")
    d.add_argument("--output", required=True, help="directory for tflite/, micro/, report.md ...")
    _add_data_arguments(d)
    d.add_argument("--precisions", nargs="+", default=list(deploy.DeployConfig.precisions),
                   choices=convert.PRECISIONS)
    d.add_argument("--num-runs", type=int, default=deploy.DeployConfig.num_runs)
    d.add_argument("--micro-samples", type=int, default=deploy.DeployConfig.micro_samples)
    d.set_defaults(run=cmd_deploy)
