"""PNG charts of training runs (matplotlib, headless)."""
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
