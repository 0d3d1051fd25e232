"""kcaps_training.plots: PNG charts drawn from what the library's callbacks record."""
import os

from kcaps_training import plots


def test_capsule_activity_plots_one_png_per_layer_from_the_monitor_history(tmp_path):
    # the shape of kcaps.activity.CapsuleActivityMonitor.history after two epochs
    history = {name: {"epoch": [0, 1, 2], "inactive_fraction": [1.0, 0.5, 0.25],
                      "mean_length": [0.001, 0.1, 0.3]}
               for name in ("primary_capsules", "class_capsules")}
    paths = plots.plot_capsule_activity(history, str(tmp_path / "plots"), threshold=0.01)
    assert paths == [str(tmp_path / "plots" / f"{name}.png") for name in history]
    for name in history:
        assert os.path.getsize(tmp_path / "plots" / f"{name}.png") > 1000
