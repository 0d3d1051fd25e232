"""tfmot magnitude and 2:4 pruning of whole kcaps models in a plain model.fit."""
import glob

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

import kcaps
from kcaps import pruning

sparsity = tfmot.sparsity.keras
RNG = np.random.default_rng(0)
X = RNG.uniform(size=(32, 28, 28, 1)).astype(np.float32)
Y = np.arange(32) % 10


def _fit_pruned(model, tmp_path, epochs=2, **prune_kwargs):
    pruned = sparsity.prune_low_magnitude(model, **prune_kwargs)
    pruned.compile(tf.keras.optimizers.Adam(1e-3))
    history = pruned.fit(X, Y, batch_size=8, epochs=epochs, verbose=0, callbacks=[
        sparsity.UpdatePruningStep(), sparsity.PruningSummaries(log_dir=str(tmp_path / "tb"))])
    return pruned, history.history


def _kernel_sparsity(model):
    return {row["layer"]: row["sparsity"] for row in pruning.sparsity_report(model)}


def test_every_kcaps_layer_is_prunable_by_tfmot():
    model = kcaps.models.small_capsnet(decoder=True)
    wrapped = sparsity.prune_low_magnitude(
        model, pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
    assert all(isinstance(layer, pruning_wrapper.PruneLowMagnitude)
               for layer in wrapped.layers if not isinstance(layer, tf.keras.layers.InputLayer))
    layer = kcaps.layers.CapsuleDecoder((28, 28, 1))
    layer.build((None, 160))
    assert layer.get_prunable_weights() == [d.kernel for d in layer.hidden + [layer.pixels]]
    assert kcaps.layers.CapsuleLength().get_prunable_weights() == []


@pytest.mark.parametrize("build", [
    lambda: kcaps.models.backbone_capsnet("cnn", "xnodr", (28, 28, 1), 10),
    lambda: kcaps.models.backbone_capsnet("cnn", "xnidr", (28, 28, 1), 10),
    lambda: kcaps.models.small_capsnet(decoder="small", squash="approx", weight_sharing="type"),
], ids=["xnodr", "xnidr", "small_decoder_shared"])
def test_models_of_the_other_features_wrap_whole(build):
    # binarized heads (Squash layer), FasTrCaps' small decoder and shared kernels
    model = build()
    wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
    kcaps_layers = [layer.name for layer in model.layers if type(layer).__module__.startswith("kcaps")]
    assert "class_capsules" in kcaps_layers
    def flat(layers):  # a nested backbone model is cloned with its own layers wrapped
        for layer in layers:
            yield from flat(layer.layers) if isinstance(layer, tf.keras.Model) else [layer]

    for layer in flat(wrapped.layers):
        if layer.name.replace("prune_low_magnitude_", "") in kcaps_layers or layer.weights:
            assert isinstance(layer, pruning_wrapper.PruneLowMagnitude), layer.name


@pytest.mark.slow
def test_constant_sparsity_in_a_plain_fit_then_strip_keeps_the_model_and_its_zeros(tmp_path):
    model = kcaps.models.small_capsnet(decoder=True)
    pruned, history = _fit_pruned(
        model, tmp_path, pruning_schedule=sparsity.ConstantSparsity(0.6, 0, frequency=1))
    assert type(pruned) is kcaps.models.CapsuleModel  # cloning kept the class
    assert {"loss", "prune_low_magnitude_lengths_accuracy",
            "prune_low_magnitude_reconstruction_loss"} <= set(history)
    assert glob.glob(str(tmp_path / "tb" / "**" / "events.out.tfevents.*"), recursive=True)
    measured = _kernel_sparsity(pruned)
    stripped = sparsity.strip_pruning(pruned)
    assert type(stripped) is kcaps.models.CapsuleModel
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in model.layers]
    after = _kernel_sparsity(stripped)
    assert after == measured
    for name in ("conv1", "conv2", "primary_capsules", "class_capsules", "reconstruction"):
        assert after[name] == pytest.approx(0.6, abs=0.01), name
    stripped.compile(tf.keras.optimizers.Adam(1e-3))
    assert np.isfinite(stripped.fit(X, Y, epochs=1, verbose=0).history["loss"][0])  # plain labels

    kernel = stripped.get_layer("class_capsules").kernel.numpy()
    for fmt, path in (("keras", tmp_path / "m.keras"), ("tf", tmp_path / "saved")):
        stripped.save(str(path), save_format=fmt)
        loaded = tf.keras.models.load_model(str(path))
        np.testing.assert_array_equal(loaded.get_layer("class_capsules").kernel.numpy(), kernel)
        assert _kernel_sparsity(loaded) == _kernel_sparsity(stripped)


@pytest.mark.slow
def test_polynomial_decay_reaches_its_final_sparsity(tmp_path):
    model = kcaps.models.small_capsnet()
    schedule = sparsity.PolynomialDecay(0.2, 0.8, begin_step=0, end_step=6, frequency=2)
    pruned, _ = _fit_pruned(model, tmp_path, epochs=2, pruning_schedule=schedule)
    after = _kernel_sparsity(sparsity.strip_pruning(pruned))
    for name in ("conv2", "primary_capsules", "class_capsules"):
        assert after[name] == pytest.approx(0.8, abs=0.01), name


def _numpy_two_of_four_along(values, axis):
    """At most 2 non-zeros in every group of 4 consecutive values along `axis` (padded)."""
    moved = np.moveaxis(values, axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    rows = np.pad(rows, [(0, 0), (0, (-rows.shape[1]) % 4)])
    return bool(np.all(np.count_nonzero(rows.reshape(len(rows), -1, 4), axis=-1) <= 2))


@pytest.mark.slow
def test_two_of_four_sparsity_runs_along_tfmots_axis(tmp_path):
    model = kcaps.models.small_capsnet()
    pruned, _ = _fit_pruned(model, tmp_path, epochs=1, sparsity_m_by_n=(2, 4),
                            pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
    stripped = sparsity.strip_pruning(pruned)
    rows = {row["layer"]: row for row in pruning.sparsity_report(stripped)}
    conv = stripped.get_layer("conv2").kernel.numpy()  # [h, w, cin, cout]: groups along cin
    assert _numpy_two_of_four_along(conv, axis=2) and rows["conv2"]["m_by_n"]
    assert rows["conv2"]["sparsity"] == pytest.approx(0.5)
    # The capsule kernel (num_in, input_dim, J, K) is read as a conv kernel: groups along J,
    # the 10 class capsules (4 + 4 + 2 real weights per row: 4 zeros of 10), not along input_dim.
    kernel = stripped.get_layer("class_capsules").kernel.numpy()
    assert _numpy_two_of_four_along(kernel, axis=2) and rows["class_capsules"]["m_by_n"]
    assert not _numpy_two_of_four_along(kernel, axis=1)
    assert rows["class_capsules"]["sparsity"] == pytest.approx(0.4)
    # conv1 has one input channel: each group holds 1 real weight, so nothing is pruned.
    assert rows["conv1"]["sparsity"] == 0.0
