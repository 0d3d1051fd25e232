"""The comparison of a model's converted variants: a markdown table and a PNG chart.

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
import matplotlib

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
    header = (["precision", "size (KB)", f"smaller than {base['precision']}"]
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
