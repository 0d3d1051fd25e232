"""PNG charts of training runs (matplotlib, headless)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history, path, title=""):
    """Loss and accuracy per epoch, train and validation, from a Keras `History.history` dict."""
    accuracy = [k for k in history if k.endswith("accuracy") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in history:
            axes[0].plot(range(1, len(history[key]) + 1), history[key], style, label=key)
    for key in accuracy:
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if name in history:
                axes[1].plot(range(1, len(history[name]) + 1), history[name], style, label=name)
    for ax, label in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)


def save(fig, path, dpi=100):
    """Lay out `fig`, write it to `path` (PNG) and close it; return `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_capsule_activity(history, directory, threshold):
    """One `<layer>.png` per capsule layer: inactive fraction and mean length over the epochs.

    `history` is `kcaps.activity.CapsuleActivityMonitor.history` (`{layer: {"epoch": [...],
    "inactive_fraction": [...], "mean_length": [...]}}`), `threshold` the monitor's. Returns the
    paths.
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, record in history.items():
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
        left.plot(record["epoch"], record["inactive_fraction"], "o-")
        left.set_ylim(-0.02, 1.02)
        left.set_ylabel(f"inactive fraction (|v| < {threshold:g})")
        right.plot(record["epoch"], record["mean_length"], "o-", color="tab:orange")
        right.set_ylabel("mean capsule length")
        for axis in (left, right):
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
        fig.suptitle(name)
        paths.append(save(fig, os.path.join(directory, f"{name}.png"), dpi=90))
    return paths
