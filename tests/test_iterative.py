"""Iterative channel pruning as a callback: masks during fit, then one physical shrink."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps import pruning

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(16, 28, 28, 1)).astype(np.float32)
Y = np.arange(16) % 10


def _model():
    model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2),
                                     kernel_initializer=kcaps.initializers.CapsuleFanIn(scale=100.0))
    model.compile(tf.keras.optimizers.Adam(1e-2))
    return model


@pytest.mark.slow
def test_schedule_prunes_a_step_every_k_epochs_up_to_the_target_and_shrinks_exactly(tmp_path):
    model = _model()
    schedule = pruning.IterativeChannelPruning({"conv2": 0.5, "primary_capsules": 0.5},
                                               step=0.25, every=2)
    csv = tmp_path / "log.csv"
    history = model.fit(X, Y, batch_size=8, epochs=6, verbose=0,
                        callbacks=[schedule, tf.keras.callbacks.CSVLogger(str(csv))]).history
    # conv2 (16 channels): 25% after epoch 2, 50% after epoch 4, then it stays at the target;
    # primary capsules (2 types): round(0.25 * 2) = 0 removed first, then 1.
    assert history["pruned_units"] == pytest.approx([0, 4 / 18, 4 / 18, 9 / 18, 9 / 18, 9 / 18])
    assert "pruned_units" in csv.read_text().splitlines()[0]
    assert len(schedule.keep["conv2"]) == 8 and len(schedule.keep["primary_capsules"]) == 1
    removed = np.setdiff1d(np.arange(16), schedule.keep["conv2"])
    # removed channels stayed zero through the optimizer steps after their removal
    assert not model.get_layer("conv2").kernel.numpy()[..., removed].any()
    assert not model.get_layer("primary_capsules").conv.kernel.numpy()[:, :, removed].any()

    small = schedule.shrink()
    assert small.get_layer("conv2").filters == 8
    assert small.get_layer("class_capsules").kernel.shape[0] == 1  # N_in: 2 -> 1
    np.testing.assert_allclose(small.predict(X, verbose=0), model.predict(X, verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_later_events_only_remove_units_still_alive():
    model = _model()
    schedule = pruning.IterativeChannelPruning({"conv1": 0.5}, step=0.25, every=1,
                                               criterion="activity", data=X[:8])
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0, callbacks=[schedule])
    first = set(schedule.keep["conv1"].tolist())
    model.fit(X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[schedule])
    assert set(schedule.keep["conv1"].tolist()) <= first and len(schedule.keep["conv1"]) == 4


def test_bad_schedules_are_refused_at_construction_or_start():
    with pytest.raises(ValueError, match="step must be in"):
        pruning.IterativeChannelPruning(0.5, step=0.0)
    with pytest.raises(ValueError, match="`every` must be a positive integer"):
        pruning.IterativeChannelPruning(0.5, every=0)
    with pytest.raises(ValueError, match="needs `data`"):
        pruning.IterativeChannelPruning(0.5, criterion="chip")
    with pytest.raises(ValueError, match=r"'conv1': pruning ratio must be a number in \[0, 1\), got 1.2"):
        pruning.IterativeChannelPruning({"conv1": 1.2})
    model = _model()
    for target, message in (({"bn1": 0.5}, r"'bn1' \(BatchNormalization\) is not prunable"),
                            ({"primary_capsules": 0.9}, "would leave 0 of 2 capsule types")):
        with pytest.raises(ValueError, match=message):
            model.fit(X, Y, epochs=1, verbose=0,
                      callbacks=[pruning.IterativeChannelPruning(target, step=0.5)])
