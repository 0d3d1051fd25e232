"""Deployment as one pipeline: a saved Keras model file -> every build, checked, measured, reported.

    saved .keras / .h5 / SavedModel (the file that ships, not a model in memory)
      -> builds: the phone variants (float32, float16, dynamic, int8 with the XNNPACK forms
         [, binary]) and the microcontroller int8 build (`convert.MICRO_BUILD`, what
         `kcaps convert --for-micro` makes)
      -> verification of each build in LiteRT against Keras (top-1 agreement, finite outputs)
      -> TFLite Micro on both int8 builds (smallest arena, budgets, agreement with LiteRT), the
         C export of the microcontroller build
      -> firmware of the microcontroller build on an emulated Cortex-M (`firmware="auto"` by
         default: runs when Arm GCC, QEMU and the TFLite Micro sources are here; `firmware_stage`)
      -> host benchmark of every build with the official tool, per-operator profile (routing)
      -> report.md, comparison.png, deployment.json, written once at the end

Each figure is computed once and handed forward: the Keras outputs once for all builds, a
build's LiteRT outputs once (verification, then TFLite Micro's comparison), the arena once per
int8 build. The caller gives a path and arrays (calibration images from the training split,
evaluation images and labels); this module knows nothing of datasets or training.

Files written into `output_dir`:

    tflite/<name>_<build>.tflite            every build (only once it is verified)
    micro/model_data.h, model_data.cc       the microcontroller build as C source
    benchmarks/<build>_<n>threads.json      the benchmark tool's results
    benchmarks/<build>_op_profile.txt       LiteRT's op profile (float32, int8)
    report.md, comparison.png, deployment.json

>>> PipelineConfig(precisions=("int8",), firmware="maybe")
Traceback (most recent call last):
...
ValueError: PipelineConfig: unknown firmware mode 'maybe'; valid: off, auto, on
"""
import dataclasses
import hashlib
import os
import pathlib
import shutil
import time

import numpy as np

from kcaps_tflite import benchmark, c_export, convert, files, micro, profile, report, verify
from kcaps_tflite import firmware as firmware_module

MICRO_BUILD_NAME = "int8_micro"  # the microcontroller build's name in files and the report
PROFILED = ("float32", "int8")  # builds whose operators are profiled (builtin kernels, 1 thread)
FIRMWARE_MODES = ("off", "auto", "on")
# The two tools the firmware stage drives; named first when missing (then firmware.available()).
FIRMWARE_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")


@dataclasses.dataclass
class PipelineConfig:
    """What the pipeline does (the defaults keep the quickstart's deployment to a minute or two).

    `firmware`: "auto" (default: run the microcontroller build as Cortex-M4 CMSIS-NN firmware when
    the toolchain is here, else record why not), "off", or "on" (refused before any work when the
    toolchain is missing).
    """

    precisions: tuple = ("float32", "float16", "dynamic", "int8")  # the phone variants
    micro_build: bool = True  # also the microcontroller int8 build (convert.MICRO_BUILD)
    calibration_samples: int = convert.DEFAULT_CALIBRATION_SAMPLES
    verify_samples: int | None = None  # evaluation images for LiteRT (None: all given)
    micro_samples: int = 200  # evaluation images for TFLite Micro (one invoke each; 0: none)
    threads: tuple = (1, 2)
    warmup_runs: int = 5
    num_runs: int = 50
    targets: tuple = tuple(micro.TARGETS)
    profile: bool = True
    firmware: str = "auto"
    firmware_board: str = "mps2-an386"
    firmware_kernels: str = "cmsis_nn"
    firmware_samples: int = 20
    seed: int = 0

    def __post_init__(self):
        self.precisions = tuple(self.precisions)
        unknown = [p for p in self.precisions if p not in convert.PRECISIONS]
        if unknown or not (self.precisions or self.micro_build):
            raise ValueError(f"PipelineConfig: unknown precision(s) {unknown or '(none given)'}; "
                             f"valid: {', '.join(convert.PRECISIONS)}")
        for field, low in (("calibration_samples", 1), ("micro_samples", 0), ("num_runs", 1),
                           ("warmup_runs", 0), ("firmware_samples", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"PipelineConfig: `{field}` must be an integer >= {low}, "
                                 f"got {value!r}")
        if self.verify_samples is not None and (not isinstance(self.verify_samples, int)
                                                or self.verify_samples < 1):
            raise ValueError(f"PipelineConfig: `verify_samples` must be None or an integer >= 1, "
                             f"got {self.verify_samples!r}")
        if not self.threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1
                                   for t in self.threads):
            raise ValueError(f"PipelineConfig: `threads` must be integers >= 1, got "
                             f"{self.threads!r}")
        for target in self.targets:
            if target not in micro.TARGETS:
                raise ValueError(f"PipelineConfig: unknown target {target!r}; valid: "
                                 f"{', '.join(micro.TARGETS)}")
        if self.firmware not in FIRMWARE_MODES:
            raise ValueError(f"PipelineConfig: unknown firmware mode {self.firmware!r}; valid: "
                             f"{', '.join(FIRMWARE_MODES)}")
        if self.firmware_board not in firmware_module.BOARDS:
            raise ValueError(f"PipelineConfig: unknown firmware board {self.firmware_board!r}; "
                             f"valid: {', '.join(firmware_module.BOARDS.names())}")
        if self.firmware_kernels not in firmware_module.firmware_build.KERNEL_SETS:
            raise ValueError(f"PipelineConfig: unknown firmware kernels "
                             f"{self.firmware_kernels!r}; valid: "
                             f"{', '.join(firmware_module.firmware_build.KERNEL_SETS)}")

    def builds(self):
        """`(build name, precision, convert options)` of every build, in report order."""
        builds = [(p, p, {}) for p in self.precisions]
        if self.micro_build:
            builds.append((MICRO_BUILD_NAME, "int8", dict(convert.MICRO_BUILD)))
        return builds


def firmware_missing():
    """What the firmware stage lacks on this machine (empty when nothing): the tools it drives
    (Arm GCC, QEMU) on PATH, else what `firmware.available()` finds missing (newlib, the C++
    headers, the TFLite Micro sources)."""
    missing = [tool for tool in FIRMWARE_TOOLS if shutil.which(tool) is None]
    if not missing:
        problem = firmware_module.available()
        missing += [problem] if problem else []
    return missing


def firmware_stage(config):
    """Whether the firmware stage runs: `(True, None)` or `(False, why)`.

    Decided before any work, so that `firmware="on"` without the toolchain fails at once.
    """
    if config.firmware == "off":
        return False, "off (PipelineConfig.firmware / kcaps deploy --firmware)"
    if not config.micro_build:
        if config.firmware == "on":
            raise ValueError("the firmware stage runs the microcontroller build, and "
                             "micro_build is False")
        return False, "no microcontroller build"
    missing = firmware_missing()
    if missing and config.firmware == "on":
        raise ValueError(f"firmware stage asked for (firmware 'on'), but this machine lacks "
                         f"{', '.join(missing)}; install them or use firmware 'auto' or 'off'")
    if missing:
        return False, f"skipped: {', '.join(missing)} not found"
    return True, None


def run(model_path, output_dir, calibration_images, x, y=None, config=None, name=None,
        data_description="", log=print):
    """Build, verify, analyse, benchmark and report a saved Keras model; return the findings.

    Args:
      model_path: the saved model (`.keras`, `.h5` or a SavedModel directory), pruned or not.
      output_dir: where the builds and the report go (see the module doc).
      calibration_images: images of the training split; `config.calibration_samples` of them
        (seeded) calibrate the int8 builds.
      x: evaluation images `(n, *input_shape)` (real images the model never trained on).
      y: their integer labels, optional (accuracies).
      config: a `PipelineConfig`.
      name: file-name stem of the builds (default: the model's name).
      data_description: one line naming the data, for the report.
      log: where progress lines go.
    Returns:
      The dict written to `deployment.json`.
    Raises:
      TypeError: `model_path` is not a path (save the model first: the file is what ships).
      kcaps_tflite.verify.VerificationError: a build disagrees with Keras, or an output of
        either is NaN or Inf; that build and the report are not written.
    """
    config = config or PipelineConfig()
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"the deployment pipeline starts from a saved model file (the file that "
                        f"ships), got a {type(model_path).__name__}; save it first "
                        f"(model.save('model.keras')) and give the path")
    model_path = pathlib.Path(model_path)
    run_firmware, firmware_reason = firmware_stage(config)
    keras_model = convert.inference_model(model_path)  # FileNotFoundError / ValueError name it
    name = name or keras_model.name.removesuffix("_classifier")
    x = np.asarray(x, np.float32)
    y = None if y is None else np.asarray(y).reshape(-1)
    if y is not None and len(y) != len(x):
        raise ValueError(f"{len(x)} evaluation images but {len(y)} labels")
    if config.verify_samples is not None:
        x = x[:config.verify_samples]
        y = None if y is None else y[:config.verify_samples]
    representative = convert.calibration_sample(calibration_images, config.calibration_samples,
                                                config.seed)
    out = pathlib.Path(output_dir)
    start = time.perf_counter()
    keras_scores = keras_model.predict(x, batch_size=256, verbose=0)  # once, for every build

    builds = {}
    for build, precision, options in config.builds():
        flatbuffer = convert.convert(keras_model, precision, representative_data=representative,
                                     **options)
        scores = None if precision == "binary" else verify.predict(flatbuffer, x)
        check = verify.verify(keras_model, flatbuffer, x, y, precision=precision,
                              keras_scores=keras_scores, tflite_scores=scores)
        path = convert.save(flatbuffer, out / "tflite" / f"{name}_{build}.tflite")
        builds[build] = {"build": build, "precision": precision, "options": options,
                         "file": str(path), "size_bytes": len(flatbuffer),
                         "verification": check.as_dict(), "litert_scores": scores}
        log(f"{build:10s} {len(flatbuffer) / 1024:9.1f} KB  agreement with Keras "
            f"{check.agreement:.2%}  max length diff {check.max_length_difference:.2g}  "
            f"accuracy {check.accuracy if check.accuracy is not None else float('nan'):.2%}")

    micro_reports, micro_build = _micro(builds, x, y, config, log)
    c_source = None
    if micro_build:
        header, source = c_export.export_c(builds[micro_build]["file"], out / "micro")
        c_source = {"build": micro_build, "header": str(header), "source": str(source)}

    firmware = {"status": firmware_reason}
    if run_firmware:
        firmware = _firmware(builds[micro_build]["file"], x, y, config, out / "firmware", log)

    benchmarks = _benchmark(builds, out, config, log)
    profiles = _profile(builds, out, config, log) if config.profile else {}

    variants = []
    for build, b in builds.items():
        v = b["verification"]
        variants.append({"precision": build, "size_bytes": b["size_bytes"],
                         "latency_us": b.get("latency_us", {}),
                         "arena_bytes": micro_reports.get(build, {}).get("arena_bytes"),
                         "accuracy": v["accuracy"], "agreement": v["agreement"]})
    model_bytes = model_path.read_bytes() if model_path.is_file() else None
    deployment = {
        "model": name,
        "model_file": str(model_path),
        "model_file_bytes": len(model_bytes) if model_bytes is not None else None,
        "model_file_sha256": hashlib.sha256(model_bytes).hexdigest() if model_bytes else None,
        "dataset": data_description,
        "verification_samples": len(x),
        "calibration_samples": len(representative),
        "builds": {k: {key: value for key, value in b.items() if key != "litert_scores"}
                   for k, b in builds.items()},
        "microcontroller_build": micro_build,
        "micro": micro_reports,
        "c_source": c_source,
        "firmware": firmware,
        "benchmarks": benchmarks,
        "routing_profile": profiles,
        "variants": variants,
        "seconds": time.perf_counter() - start,
    }
    written = report.write_report(deployment, out)
    log(f"deployment outputs in {out}/ ({', '.join(p.name for p in written)}, tflite/, micro/, "
        f"benchmarks/)")
    return deployment


def _micro(builds, x, y, config, log):
    """TFLite Micro on every int8 build, each analysed once; the microcontroller build named."""
    count = min(config.micro_samples, len(x))
    reports = {}
    for build, b in builds.items():
        if b["precision"] != "int8":
            continue
        scores = b["litert_scores"]
        m = micro.analyze(b["file"], x[:count] if count else None,
                          y[:count] if count and y is not None else None, targets=config.targets,
                          litert_scores=scores[:count] if count else None)
        reports[build] = {"file": b["file"], **m.as_dict()}
        agreement = (f"top-1 agreement with LiteRT {m.agreement_with_litert:.2%} (builtin "
                     f"kernels {m.agreement_with_litert_builtin:.2%}) on {m.samples} images; "
                     if m.samples else "")
        log(f"TFLite Micro, {build}: arena {m.arena_bytes / 1024:.1f} KB, {agreement}"
            + ", ".join(f"{t['target']} {'fits' if t['fits'] else 'does NOT fit'}"
                        for t in m.budgets))
    micro_build = MICRO_BUILD_NAME if MICRO_BUILD_NAME in reports else None
    return reports, micro_build


def _firmware(path, x, y, config, output_dir, log):
    """The firmware stage: the microcontroller build on an emulated Cortex-M board.

    Calls `kcaps_tflite.firmware.run_firmware` and records the dict it returns in the report's
    `firmware` section; its ELF, map and run files go to `output_dir`. Under `firmware="auto"` a
    firmware that fails to build or run (compiler error, HardFault, hang, too big for the board)
    is recorded as the section's status and the rest of the deployment goes on; under "on" it
    stops the pipeline.
    """
    count = min(config.firmware_samples, len(x))
    inputs = x[:count]
    log(f"firmware: {MICRO_BUILD_NAME} on {config.firmware_board} ({config.firmware_kernels}); "
        f"the first run builds TFLite Micro into the cache (minutes)")
    try:
        result = firmware_module.run_firmware(path, board=config.firmware_board,
                                              kernels=config.firmware_kernels, inputs=inputs,
                                              labels=y[:count] if y is not None else None,
                                              output_dir=output_dir, log=log)
    except (firmware_module.FirmwareError, firmware_module.FirmwareSizeError,
            firmware_module.firmware_build.FirmwareOpError) as error:
        if config.firmware == "on":
            raise
        log(f"firmware failed (firmware 'auto': recorded, deployment goes on): {error}")
        return {"status": f"failed: {error}", "build": MICRO_BUILD_NAME, "file": str(path),
                "board": config.firmware_board, "kernels": config.firmware_kernels}
    section = {"status": "ran", "build": MICRO_BUILD_NAME, "file": str(path),
               "board": config.firmware_board, "kernels": config.firmware_kernels,
               "samples": len(inputs), **dict(result)}
    log(f"firmware, {MICRO_BUILD_NAME} on {config.firmware_board} ({config.firmware_kernels}): "
        + ", ".join(f"{k} {v}" for k, v in result.items() if isinstance(v, (int, float, str))))
    return section


def _benchmark(builds, out, config, log):
    """The official benchmark tool on every build (XNNPACK on, as LiteRT runs by default)."""
    results = {}
    for build, b in builds.items():
        if b["precision"] == "binary":  # LCE custom ops: not runnable by LiteRT's tool
            continue
        b["latency_us"] = {}
        for threads in config.threads:
            result = benchmark.benchmark(b["file"], num_threads=threads,
                                         warmup_runs=config.warmup_runs, num_runs=config.num_runs)
            benchmark.write_result(result, out / "benchmarks" / f"{build}_{threads}threads.json")
            results[f"{build}@{threads}"] = {k: v for k, v in result.items() if k != "output"}
            b["latency_us"][threads] = result["inference_us"]["avg"]
        log(f"{build:10s} latency " + ", ".join(f"{t} thread{'s' if t > 1 else ''} "
                                                f"{b['latency_us'][t]:.0f} us"
                                                for t in config.threads))
    return results


def _profile(builds, out, config, log):
    """LiteRT's op profiler (builtin kernels, 1 thread) and the routing's share of it."""
    shares = {}
    for build in [b for b in PROFILED if b in builds]:
        path = builds[build]["file"]
        op = profile.op_profile(path, num_threads=1, warmup_runs=config.warmup_runs,
                                num_runs=config.num_runs, use_xnnpack=False)
        shares[build] = profile.routing_share(path, op.rows)
        files.write_text(out / "benchmarks" / f"{build}_op_profile.txt", op.summary)
        log(f"{build:10s} routing {shares[build]['routing_share']:.1%} of the latency (builtin "
            f"kernels, 1 thread, LiteRT's op profiler)")
    return shares
