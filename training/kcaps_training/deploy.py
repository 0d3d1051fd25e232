"""The deployment half of the main job: a trained model -> every precision, checked and measured.

    saved .keras -> convert (float32, float16, dynamic, int8[, binary]) -> verify each in LiteRT
    against Keras -> run int8 in TFLite Micro (smallest arena, budgets, agreement with LiteRT,
    C source) -> benchmark every variant with the official tool at 1 and 2 threads -> per-op
    profile (routing share) -> report.md, comparison.png, metrics.json["deployment"]

Everything is written into the run's output directory:

    tflite/<model>_<precision>.tflite      the converted models
    micro/model_data.h, model_data.cc      the int8 model as C source for firmware
    benchmarks/<precision>_<n>threads.json the benchmark tool's results
    report.md, comparison.png, metrics.json

The representative dataset for int8 is drawn from the training split, the verification inputs
are the evaluation split (real images the model never trained on).
"""
import dataclasses
import json
import pathlib
import time

import numpy as np

from kcaps_tflite import benchmark, c_export, convert, files, micro, profile, report, verify


@dataclasses.dataclass
class DeployConfig:
    """What the deployment step does (defaults keep the quickstart to about a minute)."""

    precisions: tuple = ("float32", "float16", "dynamic", "int8")
    calibration_samples: int = 200  # representative images from the training split
    verify_samples: int | None = None  # evaluation images for LiteRT (None: all)
    micro_samples: int = 200  # evaluation images for TFLite Micro (one invoke each; 0: none)
    threads: tuple = (1, 2)
    warmup_runs: int = 5
    num_runs: int = 50
    targets: tuple = tuple(micro.TARGETS)
    profile: bool = True
    seed: int = 0

    def __post_init__(self):
        unknown = [p for p in self.precisions if p not in convert.PRECISIONS]
        if unknown or not self.precisions:
            raise ValueError(f"DeployConfig: unknown precision(s) {unknown or '(none given)'}; "
                             f"valid: {', '.join(convert.PRECISIONS)}")
        for field, low in (("calibration_samples", 1), ("micro_samples", 0), ("num_runs", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"DeployConfig: `{field}` must be an integer >= {low}, "
                                 f"got {value!r}")
        for target in self.targets:
            if target not in micro.TARGETS:
                raise ValueError(f"DeployConfig: unknown target {target!r}; valid: "
                                 f"{', '.join(micro.TARGETS)}")


def calibration_sample(x, count, seed):
    """The `count` training images (seeded) that `deploy` calibrates int8 with; all if fewer."""
    if count >= len(x):
        return x
    return x[np.random.default_rng(seed).choice(len(x), count, replace=False)]


def deploy(model, data, output_dir, config=None, name=None, log=print):
    """Convert, verify, run on TFLite Micro, benchmark and report; return the deployment metrics.

    Args:
      model: a Keras model or the path of a saved one (pruned or not).
      data: a `kcaps_training.datasets.Dataset` (training split for calibration, evaluation split
        for verification, TFLite Micro and accuracy).
      output_dir: the run's output directory (see the module doc for what goes where).
      config: a `DeployConfig`.
      name: file-name stem of the converted models (default: the model's name).
      log: where progress lines go.
    Raises:
      kcaps_tflite.verify.VerificationError if a conversion breaks numerics.
    """
    config = config or DeployConfig()
    out = pathlib.Path(output_dir)
    keras_model = convert.inference_model(model)
    name = name or keras_model.name.removesuffix("_classifier")
    x_eval, y_eval = data.x_test, data.y_test
    if config.verify_samples is not None:
        x_eval, y_eval = x_eval[:config.verify_samples], y_eval[:config.verify_samples]
    representative = calibration_sample(data.x_train, config.calibration_samples, config.seed)
    keras_scores = keras_model.predict(x_eval, batch_size=256, verbose=0)
    start = time.perf_counter()

    variants, conversions, paths = [], {}, {}
    for precision in config.precisions:
        flatbuffer = convert.convert(keras_model, precision, representative_data=representative)
        path = convert.save(flatbuffer, out / "tflite" / f"{name}_{precision}.tflite")
        check = verify.verify(keras_model, flatbuffer, x_eval, y_eval, precision=precision,
                              keras_scores=keras_scores)
        paths[precision] = path
        conversions[precision] = {"file": str(path), "size_bytes": len(flatbuffer),
                                  **check.as_dict()}
        log(f"{precision:8s} {len(flatbuffer) / 1024:9.1f} KB  agreement with Keras "
            f"{check.agreement:.2%}  max length diff {check.max_length_difference:.2g}  "
            f"accuracy {check.accuracy:.2%}")
        variants.append({"precision": precision, "size_bytes": len(flatbuffer),
                         "latency_us": {}, "arena_bytes": None, "accuracy": check.accuracy,
                         "agreement": check.agreement})

    micro_report = None
    if "int8" in paths:
        count = min(config.micro_samples, len(x_eval))
        micro_report = micro.analyze(paths["int8"], x_eval[:count] if count else None,
                                     y_eval[:count] if count else None, targets=config.targets)
        header, source = c_export.export_c(paths["int8"], out / "micro")
        next(v for v in variants if v["precision"] == "int8")["arena_bytes"] = \
            micro_report.arena_bytes
        agreement = (f"top-1 agreement with LiteRT {micro_report.agreement_with_litert:.2%} "
                     f"(builtin kernels {micro_report.agreement_with_litert_builtin:.2%}) on "
                     f"{micro_report.samples} images; " if micro_report.samples else "")
        log(f"TFLite Micro: arena {micro_report.arena_bytes / 1024:.1f} KB, {agreement}"
            + ", ".join(f"{b['target']} {'fits' if b['fits'] else 'does NOT fit'}"
                                    for b in micro_report.budgets))

    benchmarks = {}
    for variant in variants:
        precision = variant["precision"]
        if precision == "binary":  # LCE custom ops: not runnable by LiteRT's tool
            continue
        for threads in config.threads:
            result = benchmark.benchmark(paths[precision], num_threads=threads,
                                         warmup_runs=config.warmup_runs, num_runs=config.num_runs)
            result.pop("output", None)
            files.write_text(out / "benchmarks" / f"{precision}_{threads}threads.json",
                             json.dumps(result, indent=2))
            benchmarks[f"{precision}@{threads}"] = result
            variant["latency_us"][threads] = result["inference_us"]["avg"]
        log(f"{precision:8s} latency " + ", ".join(
            f"{t} thread{'s' if t > 1 else ''} {variant['latency_us'][t]:.0f} us"
            for t in config.threads))

    profiles = {}
    if config.profile:
        for precision in [p for p in ("float32", "int8") if p in paths]:
            op = profile.op_profile(paths[precision], num_threads=1,
                                    warmup_runs=config.warmup_runs, num_runs=config.num_runs,
                                    use_xnnpack=False)
            share = profile.routing_share(paths[precision], op.rows)
            profiles[precision] = share
            files.write_text(out / "benchmarks" / f"{precision}_op_profile.txt", op.summary)
            log(f"{precision:8s} routing {share['routing_share']:.1%} of the latency "
                f"(builtin kernels, 1 thread, LiteRT's op profiler)")

    chart = report.comparison_chart(variants, out / "comparison.png",
                                    title=f"{name}: converted variants")
    deployment = {
        "model": name,
        "dataset": data.describe(),
        "verification_samples": len(x_eval),
        "calibration_samples": len(representative),
        "conversions": conversions,
        "micro": micro_report.as_dict() if micro_report else None,
        "benchmarks": benchmarks,
        "routing_profile": profiles,
        "variants": variants,
        "seconds": time.perf_counter() - start,
    }
    files.write_text(out / "report.md", render_report(deployment))
    _merge_metrics(out / "metrics.json", deployment)
    log(f"deployment outputs in {out}/ (report.md, {pathlib.Path(chart).name}, metrics.json, "
        f"tflite/, micro/, benchmarks/)")
    return deployment


def _merge_metrics(path, deployment):
    path = pathlib.Path(path)
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics["deployment"] = deployment
    files.write_text(path, json.dumps(metrics, indent=2, default=_jsonable))


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def render_report(d):
    """report.md: conversions, TFLite Micro, latency, routing share."""
    lines = [f"# {d['model']}: deployment report", "",
             f"Data: {d['dataset']}. Verification on {d['verification_samples']} evaluation "
             f"images; int8 calibrated on {d['calibration_samples']} training images.", "",
             "## Variants", "", report.comparison_table(d["variants"]), "",
             "![comparison](comparison.png)", "",
             "Latency: average of the benchmark tool's timed runs (XNNPACK on, as LiteRT runs by "
             "default). Agreement: fraction of evaluation images whose top-1 class is the one "
             "Keras gives; a conversion below its threshold fails (kcaps_tflite.verify).", ""]
    lines += ["| precision | max capsule-length difference | threshold | file |",
              "|---|---|---|---|"]
    for precision, c in d["conversions"].items():
        lines.append(f"| {precision} | {c['max_length_difference']:.3g} | "
                     f"{c['min_agreement']:.0%} | `{pathlib.Path(c['file']).name}` |")
    m = d.get("micro")
    if m:
        lines += ["", "## TFLite Micro (int8)", "",
                  f"- model {m['model_bytes']:,} bytes, smallest working arena "
                  f"{m['arena_bytes']:,} bytes",
                  f"- operators: " + ", ".join(f"{k} x{v}" for k, v in m["op_counts"].items()),
                  f"- computed in float inside the int8 model: "
                  f"{', '.join(m['float_operators']) or 'nothing'}",
                  (f"- top-1 agreement with LiteRT: {m['agreement_with_litert']:.2%} "
                   f"(XNNPACK, LiteRT's default), {m['agreement_with_litert_builtin']:.2%} "
                   f"(TFLite's builtin kernels) on {m['samples']} images (accuracy "
                   f"{m['accuracy']:.2%} vs LiteRT {m['litert_accuracy']:.2%}; max output "
                   f"difference {m['max_output_difference']:.3g})" if m["samples"] else
                   "- not run on images (micro_samples=0)"),
                  "- C source: `micro/model_data.h`, `micro/model_data.cc`", "",
                  "| target | flash | SRAM | model | arena | fits |", "|---|---|---|---|---|---|"]
        for b in m["budgets"]:
            lines.append(f"| {b['target']} ({b['description']}) | {b['flash_bytes'] // 1024} KB "
                         f"| {b['sram_bytes'] // 1024} KB | {b['model_bytes'] / 1024:.1f} KB | "
                         f"{b['arena_bytes'] / 1024:.1f} KB | {'yes' if b['fits'] else 'NO'} |")
        lines.append("")
        lines.append("Flash counts the model only; the TFLite Micro interpreter and kernels "
                     "(tens of KB) come on top.")
    if d["benchmarks"]:
        lines += ["", "## Benchmark tool results", "", "| variant | init (us) | first (us) | "
                  "warm-up avg (us) | avg (us) | std (us) | min (us) | max (us) | memory "
                  "init/overall (MB) |", "|---|---|---|---|---|---|---|---|---|"]
        for key, r in d["benchmarks"].items():
            i, mem = r["inference_us"], r["memory_mb"]
            lines.append(
                f"| {key} | {r['init_us']:.0f} | {r['first_inference_us']:.0f} | "
                f"{r['warmup_avg_us']:.0f} | {i['avg']:.0f} | {i['std']:.0f} | {i['min']:.0f} | "
                f"{i['max']:.0f} | {mem['init']:.2f} / {mem['overall']:.2f} |")
        lines.append("")
        lines.append(f"Engine: {next(iter(d['benchmarks'].values()))['engine']}.")
    if d["routing_profile"]:
        lines += ["", "## Where the time goes (LiteRT op profiler, builtin kernels, 1 thread)",
                  "", "| precision | routing | projection u_hat = W u | total (ms) |",
                  "|---|---|---|---|"]
        for precision, p in d["routing_profile"].items():
            lines.append(f"| {precision} | {p['routing_share']:.1%} | "
                         f"{p['projection_share']:.1%} | {p['total_ms']:.3f} |")
    return "\n".join(lines) + "\n"
