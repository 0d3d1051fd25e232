"""The deployment report: a markdown page, a PNG chart and a JSON file, written once.

`write_report(deployment, output_dir)` writes `report.md`, `comparison.png` and
`deployment.json` from the dict `kcaps_tflite.pipeline.run` builds; nothing else writes them.
The pieces: `comparison_table` and `comparison_chart` of a model's variants,
`int8_builds_table` (the phone and microcontroller int8 builds side by side) and
`render_markdown`.

A variant is a dict with the keys below (None where a figure does not apply, e.g. the arena of a
float model, which TFLite Micro is not asked to run):

    {"precision": "int8", "size_bytes": 192552, "latency_us": {1: 410.0, 2: 300.0},
     "arena_bytes": 57248, "accuracy": 0.986, "agreement": 0.997}

>>> from kcaps_tflite import report
>>> print(report.comparison_table([{"precision": "float32", "size_bytes": 698252,
...     "latency_us": {1: 260.0, 2: 190.0}, "arena_bytes": None, "accuracy": 0.987,
...     "agreement": 1.0}]).splitlines()[2])
| float32 | 681.9 | 1.00x | 260 | 190 | - | 98.70% | 100.00% |
"""
import json
import pathlib

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kcaps_tflite import files  # noqa: E402


def _threads(variants):
    return sorted({int(t) for v in variants for t in (v.get("latency_us") or {})})


def comparison_table(variants, baseline="float32"):
    """Markdown table: size (KB, and how many times smaller than `baseline`), latency per
    thread count (microseconds, the benchmark tool's average), arena, accuracy, agreement."""
    threads = _threads(variants)
    base = next((v for v in variants if v["precision"] == baseline), variants[0])
    header = (["build", "size (KB)", f"smaller than {base['precision']}"]
              + [f"latency {t} thread{'s' if t > 1 else ''} (us)" for t in threads]
              + ["TFLM arena (KB)", "accuracy", "top-1 agreement with Keras"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for v in variants:
        latency = v.get("latency_us") or {}
        cells = [v["precision"], f"{v['size_bytes'] / 1024:.1f}",
                 f"{base['size_bytes'] / v['size_bytes']:.2f}x"]
        cells += [f"{latency[t]:.0f}" if latency.get(t) is not None else "-" for t in threads]
        cells.append(f"{v['arena_bytes'] / 1024:.1f}" if v.get("arena_bytes") else "-")
        cells.append(f"{v['accuracy']:.2%}" if v.get("accuracy") is not None else "-")
        cells.append(f"{v['agreement']:.2%}" if v.get("agreement") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_chart(variants, path, title=""):
    """A PNG with three panels: file size, latency at each thread count, accuracy."""
    names = [v["precision"] for v in variants]
    threads = _threads(variants)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    positions = range(len(variants))
    axes[0].bar(positions, [v["size_bytes"] / 1024 for v in variants], color="tab:blue")
    axes[0].set_ylabel("file size (KB)")
    width = 0.8 / max(len(threads), 1)
    for k, t in enumerate(threads):
        values = [(v.get("latency_us") or {}).get(t) or 0.0 for v in variants]
        axes[1].bar([p + (k - (len(threads) - 1) / 2) * width for p in positions], values,
                    width=width, label=f"{t} thread{'s' if t > 1 else ''}")
    axes[1].set_ylabel("latency, average (us)")
    if threads:
        axes[1].legend()
    accuracy = [100 * v["accuracy"] if v.get("accuracy") is not None else 0.0 for v in variants]
    axes[2].bar(positions, accuracy, color="tab:green")
    low = min((a for a in accuracy if a > 0), default=0.0)
    axes[2].set_ylim(max(0.0, low - 5.0), 100.0)
    axes[2].set_ylabel("accuracy (%)")
    for ax in axes:
        ax.set_xticks(list(positions))
        ax.set_xticklabels(names)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with files.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_report(deployment, output_dir):
    """Write `comparison.png`, `report.md` and `deployment.json` into `output_dir` (each once,
    atomically); return their paths."""
    out = pathlib.Path(output_dir)
    chart = comparison_chart(deployment["variants"], out / "comparison.png",
                             title=f"{deployment['model']}: converted builds")
    markdown = files.write_text(out / "report.md", render_markdown(deployment))
    data = files.write_text(out / "deployment.json",
                            json.dumps(deployment, indent=2, default=_jsonable))
    return [markdown, pathlib.Path(chart), data]


def _pct(value):
    return f"{value:.2%}" if value is not None else "-"


def int8_builds_table(builds, micro_reports):
    """Markdown: the int8 builds side by side (one column each): options, size, arena, budgets,
    accuracies, agreement with Keras (LiteRT) and of TFLite Micro with LiteRT."""
    names = list(micro_reports)
    rows = [("options", lambda b, m: ", ".join(f"{k}={v}" for k, v in b["options"].items())
             or "default (XNNPACK forms)"),
            ("file size (KB)", lambda b, m: f"{b['size_bytes'] / 1024:.1f}"),
            ("TFLite Micro arena (KB)", lambda b, m: f"{m['arena_bytes'] / 1024:.1f}")]
    for k, target in enumerate(micro_reports[names[0]]["budgets"]):
        rows.append((f"fits {target['target']} ({target['flash_bytes'] // 1024} KB flash / "
                     f"{target['sram_bytes'] // 1024} KB SRAM)",
                     lambda b, m, k=k: "yes" if m["budgets"][k]["fits"] else "NO"))
    rows += [("accuracy in LiteRT (every verification image)",
              lambda b, m: _pct(b["verification"]["accuracy"])),
             ("accuracy on TFLite Micro's images: TFLite Micro / LiteRT",
              lambda b, m: f"{_pct(m['accuracy'])} / {_pct(m['litert_accuracy'])}"),
             ("top-1 agreement with Keras (LiteRT)",
              lambda b, m: _pct(b["verification"]["agreement"])),
             ("top-1 agreement, TFLite Micro vs LiteRT (XNNPACK)",
              lambda b, m: _pct(m["agreement_with_litert"])),
             ("top-1 agreement, TFLite Micro vs LiteRT (builtin kernels)",
              lambda b, m: _pct(m["agreement_with_litert_builtin"])),
             ("max output difference, TFLite Micro vs LiteRT",
              lambda b, m: f"{m['max_output_difference']:.3g}"
              if m["max_output_difference"] is not None else "-"),
             ("computed in float", lambda b, m: ", ".join(m["float_operators"]) or "nothing")]
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(builds[n], micro_reports[n])
                                                  for n in names) + " |")
    return "\n".join(lines)


def render_markdown(d):
    """report.md: builds, the two int8 builds, TFLite Micro, firmware, latency, routing share."""
    file_line = f"Converted from `{d['model_file']}`"
    if d.get("model_file_sha256"):
        file_line += (f" ({d['model_file_bytes']:,} bytes, sha256 "
                      f"{d['model_file_sha256'][:16]}...)")
    lines = [f"# {d['model']}: deployment report", "",
             f"{file_line}. Data: {d['dataset'] or 'given arrays'}. Verification on "
             f"{d['verification_samples']} evaluation images; int8 calibrated on "
             f"{d['calibration_samples']} training images.", "",
             "## Builds", "", comparison_table(d["variants"]), "",
             "![comparison](comparison.png)", "",
             "Latency: average of the benchmark tool's timed runs (XNNPACK on, as LiteRT runs by "
             "default). Agreement: fraction of evaluation images whose top-1 class is the one "
             "Keras gives; a build below its threshold, or with any NaN or Inf output, fails "
             "(kcaps_tflite.verify) and is not written.", "",
             "| build | max capsule-length difference | threshold | file |", "|---|---|---|---|"]
    for build, b in d["builds"].items():
        v = b["verification"]
        lines.append(f"| {build} | {v['max_length_difference']:.3g} | {v['min_agreement']:.0%} "
                     f"| `{pathlib.Path(b['file']).name}` |")
    if d["micro"]:
        lines += ["", "## The int8 builds side by side", "",
                  "`int8` is the phone build (forms XNNPACK runs in int8); `int8_micro` the "
                  "microcontroller build (`kcaps convert --for-micro`: no XNNPACK forms, SUMs as "
                  "MEAN x count). TFLite Micro runs each on the first "
                  f"{next(iter(d['micro'].values()))['samples']} evaluation images.", "",
                  int8_builds_table(d["builds"], d["micro"])]
    name = d.get("microcontroller_build")
    if name:
        m = d["micro"][name]
        lines += ["", f"## TFLite Micro: the microcontroller build (`{name}`)", "",
                  f"- model {m['model_bytes']:,} bytes, smallest working arena "
                  f"{m['arena_bytes']:,} bytes",
                  "- operators: " + ", ".join(f"{k} x{v}" for k, v in m["op_counts"].items()),
                  f"- C source: `micro/{pathlib.Path(d['c_source']['header']).name}`, "
                  f"`micro/{pathlib.Path(d['c_source']['source']).name}`", "",
                  "| target | flash | SRAM | model | arena | fits |", "|---|---|---|---|---|---|"]
        for b in m["budgets"]:
            lines.append(f"| {b['target']} ({b['description']}) | {b['flash_bytes'] // 1024} KB "
                         f"| {b['sram_bytes'] // 1024} KB | {b['model_bytes'] / 1024:.1f} KB | "
                         f"{b['arena_bytes'] / 1024:.1f} KB | {'yes' if b['fits'] else 'NO'} |")
        lines += ["", "Flash counts the model only; the TFLite Micro interpreter and kernels "
                      "(tens of KB) come on top."]
    firmware = d.get("firmware") or {}
    lines += ["", "## Firmware on an emulated Cortex-M", ""]
    if firmware.get("status") == "ran":
        lines += ["| | |", "|---|---|"] + [
            f"| {k} | {v} |" for k, v in firmware.items()
            if k != "status" and isinstance(v, (int, float, str, bool))]
    else:
        lines.append(f"Not run: {firmware.get('status', 'off')}.")
    if d["benchmarks"]:
        lines += ["", "## Benchmark tool results", "", "| build | init (us) | first (us) | "
                  "warm-up avg (us) | avg (us) | std (us) | min (us) | max (us) | memory "
                  "init/overall (MB) |", "|---|---|---|---|---|---|---|---|---|"]
        for key, r in d["benchmarks"].items():
            i, mem = r["inference_us"], r["memory_mb"]
            lines.append(
                f"| {key} | {_num(r['init_us'])} | {_num(r['first_inference_us'])} | "
                f"{_num(r['warmup_avg_us'])} | {_num(i['avg'])} | {_num(i['std'])} | "
                f"{_num(i['min'])} | {_num(i['max'])} | {_num(mem['init'], '.2f')} / "
                f"{_num(mem['overall'], '.2f')} |")
        lines += ["", f"Engine: {next(iter(d['benchmarks'].values()))['engine']}."]
    if d["routing_profile"]:
        lines += ["", "## Where the time goes (LiteRT op profiler, builtin kernels, 1 thread)",
                  "", "| build | routing | projection u_hat = W u | total (ms) |",
                  "|---|---|---|---|"]
        for build, p in d["routing_profile"].items():
            lines.append(f"| {build} | {p['routing_share']:.1%} | {p['projection_share']:.1%} | "
                         f"{p['total_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def _num(value, spec=".0f"):
    return "-" if value is None else format(value, spec)
