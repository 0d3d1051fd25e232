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


def _numpy_two_of_four_mask(values, axis):
    """Keep the 2 largest |w| of every 4 consecutive weights along `axis`; a last group of r < 4
    real weights is padded with zeros (tfmot's padding) and keeps min(r, 2) of them."""
    moved = np.moveaxis(np.abs(values), axis, -1)
    length = moved.shape[-1]
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, (-length) % 4)])
    groups = padded.reshape(*padded.shape[:-1], -1, 4)
    ranks = np.argsort(np.argsort(-groups, axis=-1, kind="stable"), axis=-1)
    keep = (ranks < 2).reshape(padded.shape)[..., :length]
    return np.moveaxis(keep, -1, axis)


def _stored_kernel(model, name):
    layer = model.get_layer(name)
    return (layer.conv if isinstance(layer, kcaps.layers.PrimaryCapsules) else layer).kernel.numpy()


@pytest.mark.slow
def test_two_of_four_sparsity_runs_along_the_reduction_axis(tmp_path):
    model = kcaps.models.small_capsnet()
    initial = {name: _stored_kernel(model, name)
               for name in ("conv2", "primary_capsules", "class_capsules")}
    pruned, _ = _fit_pruned(model, tmp_path, epochs=1, sparsity_m_by_n=(2, 4),
                            pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
    stripped = sparsity.strip_pruning(pruned)
    rows = {row["layer"]: row for row in pruning.sparsity_report(stripped)}
    # The mask is computed once, at the first step, from the initial weights: NumPy predicts it.
    for name, axis in (("conv2", 2), ("primary_capsules", 2), ("class_capsules", 1)):
        kernel = _stored_kernel(stripped, name)
        np.testing.assert_array_equal(kernel != 0, _numpy_two_of_four_mask(initial[name], axis))
        assert _numpy_two_of_four_along(kernel, axis) and rows[name]["m_by_n"], name
        assert rows[name]["axis"] == axis and rows[name]["sparsity"] == 0.5, name
    # class capsules (128, 8, 10, 8): the groups run along input_dim = 8, not across the 10
    # capsules (tfmot's reading of a rank-4 kernel, 40% zeros before kcaps' PermutedWeight).
    kernel = stripped.get_layer("class_capsules").kernel.numpy()
    assert not _numpy_two_of_four_along(kernel, axis=2)
    # conv1 has one input channel: its one-weight groups are padded and nothing is pruned.
    assert rows["conv1"]["sparsity"] == 0.0 and rows["conv1"]["m_by_n"]


@pytest.mark.parametrize("input_dim, zeros", [(5, 2), (6, 2), (7, 3), (12, 6)])
def test_two_of_four_on_a_reduction_axis_that_is_not_a_multiple_of_4(input_dim, zeros):
    # No error: tfmot pads the last partial group of r < 4 weights with zeros, and it keeps
    # min(r, 2) of them: input_dim 5 = 4 + 1 -> 2 zeros of 5; 6 = 4 + 2 -> 2; 7 = 4 + 3 -> 3.
    inputs = tf.keras.Input((12, input_dim))
    capsules = kcaps.layers.CapsuleDense(10, 4, name="caps")(inputs)
    model = tf.keras.Model(inputs, kcaps.layers.CapsuleLength()(capsules))
    initial = model.get_layer("caps").kernel.numpy()
    pruned = sparsity.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    pruned.compile(tf.keras.optimizers.SGD(1e-3), loss="mse")
    x = RNG.normal(size=(16, 12, input_dim)).astype(np.float32)
    pruned.fit(x, np.zeros((16, 10), np.float32), batch_size=8, epochs=1, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    kernel = sparsity.strip_pruning(pruned).get_layer("caps").kernel.numpy()
    np.testing.assert_array_equal(kernel != 0, _numpy_two_of_four_mask(initial, axis=1))
    assert np.mean(kernel == 0) == pytest.approx(zeros / input_dim)
    assert pruning.has_m_by_n(np.moveaxis(kernel, 1, 2))  # as tfmot sees it, padded groups

