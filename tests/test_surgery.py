"""kcaps.pruning.surgery and structure: unit selection, the physical shrink, masks, bad input."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps import pruning
from pruning_helpers import RNG, _cnn_capsnet, _deep_capsnet, _images, _randomize_batch_norm


def test_shrink_copies_exactly_the_kept_weights_into_every_touched_layer():
    model = _cnn_capsnet()
    keep = {"conv1": [0, 2, 5, 7], "conv2": [1, 3, 4, 8, 9, 10, 11, 15], "primary_capsules": [1]}
    small = pruning.shrink(model, keep)
    old, new = model.get_layer, small.get_layer
    k1, k2 = keep["conv1"], keep["conv2"]
    np.testing.assert_array_equal(new("conv1").kernel.numpy(), old("conv1").kernel.numpy()[..., k1])
    for b_new, b_old in zip(new("bn1").get_weights(), old("bn1").get_weights()):
        np.testing.assert_array_equal(b_new, b_old[k1])
    np.testing.assert_array_equal(new("conv2").kernel.numpy(),
                                  old("conv2").kernel.numpy()[:, :, k1][..., k2])
    for b_new, b_old in zip(new("bn2").get_weights(), old("bn2").get_weights()):
        np.testing.assert_array_equal(b_new, b_old[k2])
    # capsule type 1 owns filters 8..15 of the primary convolution (type-major channels)
    primary_old, primary_new = old("primary_capsules").conv, new("primary_capsules").conv
    np.testing.assert_array_equal(primary_new.kernel.numpy(),
                                  primary_old.kernel.numpy()[:, :, k2][..., 8:16])
    np.testing.assert_array_equal(primary_new.bias.numpy(), primary_old.bias.numpy()[8:16])
    # one position, so primary capsule i is type i: W keeps row 1, and N_in goes from 2 to 1
    np.testing.assert_array_equal(new("class_capsules").kernel.numpy(),
                                  old("class_capsules").kernel.numpy()[[1]])
    assert new("primary_capsules").output_shape == (None, 1, 8)
    assert type(small) is type(model) and small.count_params() < model.count_params()


def test_pruned_capsule_types_remove_their_w_rows_at_every_position():
    model = _deep_capsnet()
    positions = model.get_layer("primary_capsules").output_shape[1] // 4  # 4 types
    small = pruning.shrink(model, {"primary_capsules": [0, 3]})
    kernel = model.get_layer("capsules_1").kernel.numpy()
    rows = (np.arange(positions)[:, None] * 4 + np.array([0, 3])[None, :]).reshape(-1)
    np.testing.assert_array_equal(small.get_layer("capsules_1").kernel.numpy(), kernel[rows])
    assert small.get_layer("capsules_1").kernel.shape[0] == 2 * positions


def test_pruned_intermediate_capsules_shrink_the_next_capsule_layer():
    model = _deep_capsnet()
    small = pruning.shrink(model, {"capsules_1": [1, 4]})
    w1, w2 = model.get_layer("capsules_1").kernel.numpy(), model.get_layer("capsules_2").kernel.numpy()
    np.testing.assert_array_equal(small.get_layer("capsules_1").kernel.numpy(), w1[:, :, [1, 4]])
    np.testing.assert_array_equal(small.get_layer("capsules_2").kernel.numpy(), w2[[1, 4]])
    assert small.get_layer("capsules_1").output_shape == (None, 2, 4)


@pytest.mark.parametrize("builder, keep", [
    (_cnn_capsnet, {"conv1": [1, 2, 6], "conv2": [0, 5, 9, 12, 13], "primary_capsules": [0]}),
    (_deep_capsnet, {"conv1": [0, 3, 4, 9, 10, 15], "primary_capsules": [1, 2]}),
])
def test_shrunk_model_computes_exactly_what_the_masked_model_computes(builder, keep):
    model = builder()
    x = _images()
    small = pruning.shrink(model, keep)
    pruning.apply_masks(pruning.masks(model, keep))
    expected = model.predict(x, verbose=0)
    assert np.std(expected) > 1e-3  # a real comparison, not of vanished capsules
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_masks_zero_every_weight_that_reads_a_removed_unit():
    model = _cnn_capsnet()
    pruning.apply_masks(pruning.masks(model, {"conv1": [0, 1, 2, 3], "primary_capsules": [0]}))
    assert not model.get_layer("conv1").kernel.numpy()[..., 4:].any()
    assert not model.get_layer("bn1").gamma.numpy()[4:].any()
    assert not model.get_layer("conv2").kernel.numpy()[:, :, 4:].any()
    assert not model.get_layer("primary_capsules").conv.kernel.numpy()[..., 8:].any()
    assert not model.get_layer("class_capsules").kernel.numpy()[1].any()
    assert model.get_layer("class_capsules").kernel.numpy()[0].all()


def test_plain_keras_models_with_pooling_flatten_and_depthwise_layers():
    inputs = tf.keras.Input((12, 12, 3))
    h = tf.keras.layers.Conv2D(6, 3, activation="relu", name="a")(inputs)
    h = tf.keras.layers.DepthwiseConv2D(3, name="dw")(h)
    h = tf.keras.layers.BatchNormalization(name="bn")(h)
    h = tf.keras.layers.Conv2D(5, 3, name="b")(h)
    pooled = tf.keras.layers.Flatten(name="flat")(tf.keras.layers.MaxPooling2D(name="pool")(h))
    model = _randomize_batch_norm(tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="out")(pooled)))
    keep = {"a": [0, 2, 3], "b": [1, 4]}
    small = pruning.shrink(model, keep)
    x = RNG.normal(size=(4, 12, 12, 3)).astype(np.float32)
    pruning.apply_masks(pruning.masks(model, keep))
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert small.get_layer("out").kernel.shape == (3 * 3 * 2, 3)  # 3x3 positions x 2 channels

    sequential = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)), tf.keras.layers.Conv2D(4, 3, name="c1"),
        tf.keras.layers.GlobalAveragePooling2D(name="gap"), tf.keras.layers.Dense(2, name="d")])
    small = pruning.prune_channels(sequential, {"c1": 0.5})
    assert isinstance(small, tf.keras.Sequential) and small.get_layer("d").kernel.shape == (2, 2)


def test_ratio_keeps_the_highest_scoring_units():
    model = _cnn_capsnet()
    kernel = model.get_layer("conv1").kernel.numpy()
    norms = np.abs(kernel).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(pruning.l1_scores(model.get_layer("conv1")), norms, rtol=1e-6)
    keep = pruning.select(model, {"conv1": 0.25})  # 8 - round(2) = 6 kept
    np.testing.assert_array_equal(keep["conv1"], np.sort(np.argsort(-norms)[:6]))
    scores = {"conv1": np.array([5, 1, 4, 1, 9, 2, 6, 3.0])}
    assert pruning.select(model, {"conv1": 0.5}, scores=scores)["conv1"].tolist() == [0, 2, 4, 6]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "0.5", True, float("nan")])
def test_ratios_outside_zero_one_name_the_layer_and_value(ratio):
    model = _cnn_capsnet()
    with pytest.raises(ValueError, match=r"'conv1'.*\[0, 1\)"):
        pruning.prune_channels(model, {"conv1": ratio})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pruning.IterativeChannelPruning({"conv1": ratio})


def test_layers_that_are_not_prunable_are_refused_by_name():
    model = _cnn_capsnet()
    with pytest.raises(ValueError, match=r"'bn1' \(BatchNormalization\) is not prunable"):
        pruning.prune_channels(model, {"bn1": 0.5})
    with pytest.raises(ValueError, match=r"'class_capsules'.*'lengths'"):
        pruning.prune_channels(model, {"class_capsules": 0.5})
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        pruning.prune_channels(model, {"conv9": 0.5})
    assert "class_capsules" not in pruning.prunable_units(model)


def test_a_ratio_that_leaves_no_unit_is_refused():
    model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2))
    with pytest.raises(ValueError, match=r"'primary_capsules': ratio 0.8 would leave 0 of 2 capsule types"):
        pruning.prune_channels(model, {"primary_capsules": 0.8})
    with pytest.raises(ValueError, match="would leave 0 of 8 channels"):
        pruning.shrink(model, {"conv1": []})


def test_removals_that_reach_unsupported_layers_are_refused_before_any_change():
    inputs = tf.keras.Input((8, 8, 4))
    a = tf.keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    out = tf.keras.layers.Add(name="skip")([a, inputs])
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(2, 1, name="b")(out))
    before = model.get_layer("a").kernel.numpy().copy()
    with pytest.raises(ValueError, match=r"cannot prune 'a'.*'skip' \(Add\)"):
        pruning.prune_channels(model, {"a": 0.5})
    np.testing.assert_array_equal(model.get_layer("a").kernel.numpy(), before)

    shared = kcaps.models.small_capsnet(weight_sharing=16)
    with pytest.raises(ValueError, match=r"weight_sharing=16"):
        pruning.prune_channels(shared, {"primary_capsules": 0.5})


def test_pruning_needs_stripped_models_and_data_for_data_criteria():
    import tensorflow_model_optimization as tfmot

    model = _cnn_capsnet()
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match="strip_pruning"):
        pruning.prune_channels(wrapped, 0.5)
    with pytest.raises(ValueError, match="needs `data`"):
        pruning.prune_channels(model, 0.5, criterion="chip")
    with pytest.raises(ValueError, match="unknown pruning criterion 'l2'"):
        pruning.prune_channels(model, 0.5, criterion="l2")


@pytest.mark.parametrize("save_format", ["keras", "tf"])
def test_shrunk_capsule_model_saves_loads_and_trains_with_plain_labels(tmp_path, save_format):
    model = _cnn_capsnet(decoder=True)
    small = pruning.prune_channels(model, 0.5)
    small.compile(tf.keras.optimizers.Adam(1e-3))
    x, y = _images(8), np.arange(8) % 10
    small.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / ("m.keras" if save_format == "keras" else "m"))
    small.save(path, save_format=save_format)
    loaded = tf.keras.models.load_model(path)
    assert loaded.get_layer("primary_capsules").capsule_types == 1
    for a, b in zip(small.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_registered_surgery_lets_pruning_pass_through_a_custom_layer():
    class Halve(tf.keras.layers.Layer):  # per channel, but unknown to the surgery
        def call(self, inputs):
            return inputs / 2.0

    def model():
        inputs = tf.keras.Input((8, 8, 3))
        h = tf.keras.layers.Conv2D(4, 3, name="c1")(inputs)
        h = Halve(name="halve")(h)
        return tf.keras.Model(inputs, tf.keras.layers.Conv2D(2, 3, name="c2")(h))

    with pytest.raises(ValueError, match=r"cannot prune 'c1'.*'halve' \(Halve\)"):
        pruning.prune_channels(model(), {"c1": 0.5})
    pruning.structure.register(Halve, pruning.structure.ChannelWise())
    try:
        big = model()
        with tf.keras.utils.custom_object_scope({"Halve": Halve}):  # shrink rebuilds from config
            small = pruning.prune_channels(big, {"c1": 0.5}, criterion="l1")
        assert small.get_layer("c2").kernel.shape == (3, 3, 2, 2)
        kept = pruning.select(big, {"c1": 0.5})["c1"]
        x = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
        h = big.get_layer("c1")(x).numpy()[..., kept] / 2.0  # the kept channels, halved
        kernel = big.get_layer("c2").kernel.numpy()[:, :, kept, :]  # c2's rows for them
        patches = np.stack([h[:, i:i + 4, j:j + 4] for i in range(3) for j in range(3)], 3)
        expected = np.einsum("bxypc,pco->bxyo", patches, kernel.reshape(9, 2, 2))
        expected += big.get_layer("c2").bias.numpy()
        np.testing.assert_allclose(small(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    finally:
        del pruning.structure.SURGERY[Halve]
