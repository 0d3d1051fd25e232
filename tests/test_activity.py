"""Capsule activity: inactive fraction and mean length per capsule layer, and the monitor."""
import glob

import numpy as np
import pytest
import tensorflow as tf

import kcaps

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(12, 28, 28, 1)).astype(np.float32)
Y = np.arange(12) % 10


def _deep(**kwargs):
    return kcaps.models.deep_capsnet(num_intermediate=2, intermediate_capsules=6,
                                     intermediate_dims=4, conv_filters=16, conv_kernel=5,
                                     primary_types=4, primary_kernel=5, primary_strides=3, **kwargs)


def test_inactive_capsules_are_those_below_threshold_on_every_example():
    lengths = np.array([[0.005, 0.2, 0.0, 0.009],
                        [0.008, 0.001, 0.0, 0.011]])
    stats = kcaps.activity.activity_from_lengths(lengths, threshold=0.01)
    np.testing.assert_array_equal(stats["inactive"], [True, False, True, False])
    assert stats["inactive_fraction"] == 0.5
    assert stats["mean_length"] == pytest.approx(lengths.mean())


def test_capsule_activity_matches_the_layers_outputs():
    model = _deep(kernel_initializer=kcaps.initializers.CapsuleFanIn(scale=100.0))
    stats = kcaps.activity.capsule_activity(model, X, threshold=0.05)
    assert list(stats) == ["primary_capsules", "capsules_1", "capsules_2", "class_capsules"]
    for name, values in stats.items():
        capsules = tf.keras.Model(model.inputs, model.get_layer(name).output)(X).numpy()
        lengths = np.linalg.norm(capsules, axis=-1)
        assert values["mean_length"] == pytest.approx(lengths.mean(), rel=1e-5)
        assert values["inactive_fraction"] == pytest.approx(np.mean(lengths.max(0) < 0.05))
    with pytest.raises(ValueError, match="threshold must be a number > 0"):
        kcaps.activity.capsule_activity(model, X, threshold=0)
    with pytest.raises(ValueError, match=r"'conv1' is not a capsule layer"):
        kcaps.activity.capsule_activity(model, X, layers=["conv1"])


@pytest.mark.slow
def test_monitor_writes_logs_csv_and_tensorboard(tmp_path):
    model = _deep()
    model.compile(tf.keras.optimizers.Adam(1e-3))
    monitor = kcaps.activity.CapsuleActivityMonitor(X[:8], log_dir=str(tmp_path / "activity"))
    csv = tmp_path / "log.csv"
    history = model.fit(X, Y, batch_size=6, epochs=2, verbose=0, callbacks=[
        monitor, tf.keras.callbacks.CSVLogger(str(csv)),
        tf.keras.callbacks.TensorBoard(str(tmp_path / "tb"))]).history
    header = csv.read_text().splitlines()[0].split(",")
    for name in ("primary_capsules", "capsules_1", "capsules_2", "class_capsules"):
        assert f"{name}_inactive_fraction" in header and f"{name}_mean_length" in header
        assert len(history[f"{name}_mean_length"]) == 2
        record = monitor.history[name]
        assert record["epoch"] == [0, 1, 2]  # the state before training, then each epoch
        assert record["mean_length"][1:] == pytest.approx(history[f"{name}_mean_length"])
    assert glob.glob(str(tmp_path / "activity" / "events.out.tfevents.*"))
    assert glob.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))
