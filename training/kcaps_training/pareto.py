"""The Pareto front of (training time, accuracy) points, and its PNG chart."""
from kcaps_training import plots


def pareto_front(points, time_key, accuracy_key):
    """The points no other point beats: none is at least as fast and as accurate, and better in one.

    Args:
      points: dicts with `time_key` (smaller is better) and `accuracy_key` (larger is better).
    Returns:
      The non-dominated points, fastest first.
    """
    front = []
    for p in points:
        dominated = any(
            q[time_key] <= p[time_key] and q[accuracy_key] >= p[accuracy_key]
            and (q[time_key] < p[time_key] or q[accuracy_key] > p[accuracy_key])
            for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p[time_key], -p[accuracy_key]))


def plot_front(points, path, time_key, accuracy_key, label_key="point", title=""):
    """Scatter accuracy (%) against training time (s), the Pareto front highlighted and labelled."""
    front = pareto_front(points, time_key, accuracy_key)
    on_front = {id(p) for p in front}
    fig, ax = plots.plt.subplots(figsize=(9, 5.5))
    others = [p for p in points if id(p) not in on_front]
    ax.scatter([p[time_key] for p in others], [100 * p[accuracy_key] for p in others],
               color="tab:gray", label="dominated")
    ax.step([p[time_key] for p in front], [100 * p[accuracy_key] for p in front], where="post",
            color="tab:red", alpha=0.5)
    ax.scatter([p[time_key] for p in front], [100 * p[accuracy_key] for p in front],
               color="tab:red", zorder=3, label="Pareto front")
    for p in points:
        ax.annotate(str(p[label_key]), (p[time_key], 100 * p[accuracy_key]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points",
                    color="tab:red" if id(p) in on_front else "tab:gray")
    ax.set_xlabel(f"training time (s): {time_key}")
    ax.set_ylabel(f"accuracy (%): {accuracy_key}")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return plots.save(fig, path, dpi=110)
