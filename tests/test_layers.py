import numpy as np
import pytest
import tensorflow as tf
from tf_keras.src.testing_infra import test_utils

import kcaps
from conftest import numpy_squash


def test_primary_capsules_group_channels_position_major():
    layer = kcaps.layers.PrimaryCapsules(capsule_types=3, capsule_dim=4, kernel_size=3, strides=2)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 5)).astype(np.float32)
    out = layer(x).numpy()
    assert out.shape == (2, 4 * 4 * 3, 4)
    conv = layer.conv(x).numpy()  # (2, 4, 4, 12): capsule (position p, type t) = channels 4t..4t+3
    expected = numpy_squash(conv.reshape(2, 16, 3, 4).reshape(2, 48, 4))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 9, 9, 5)).as_list() == [None, 48, 4]


def test_keras_layer_test_for_capsule_dense():
    test_utils.layer_test(
        kcaps.layers.CapsuleDense, kwargs={"num_capsules": 3, "capsule_dim": 4},
        input_shape=(2, 6, 5), expected_output_shape=(None, 3, 4))


@pytest.mark.parametrize("layer_class,kwargs", [
    (kcaps.layers.CapsuleDense, {"num_capsules": 10, "capsule_dim": 16, "routing_iterations": 2,
                                 "weight_sharing": "type", "capsule_types": 4, "use_bias": True}),
    (kcaps.layers.PrimaryCapsules, {"capsule_types": 4, "capsule_dim": 8, "kernel_size": 3,
                                    "strides": 2, "squash": "approx"}),
    (kcaps.layers.CapsuleDecoder, {"target_shape": (28, 28, 1), "hidden_units": (16, 32)}),
    (kcaps.layers.CapsuleDecoder, {"target_shape": (8, 8, 1), "kernel_initializer": "he_normal",
                                   "pixels_initializer": "glorot_normal"}),
])
def test_get_config_round_trips(layer_class, kwargs):
    layer = layer_class(**kwargs)
    clone = layer_class.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for key in ("routing_iterations", "weight_sharing", "use_bias", "capsule_types", "squash",
                "hidden_units"):
        if key in kwargs:
            assert layer.get_config()[key] == kwargs[key]


def test_capsule_length_is_the_norm():
    v = np.random.default_rng(0).normal(size=(3, 10, 16)).astype(np.float32)
    lengths = kcaps.layers.CapsuleLength()(v).numpy()
    np.testing.assert_allclose(lengths, np.sqrt((v ** 2).sum(-1) + 1e-7), rtol=1e-6)


def test_capsule_mask_uses_labels_in_training_and_lengths_at_inference():
    v = np.zeros((2, 3, 2), np.float32)
    v[0, 1] = [3, 4]
    v[0, 2] = [1, 0]
    v[1, 0] = [0, 2]
    v[1, 2] = [0, 1]
    mask = kcaps.layers.CapsuleMask()
    by_length = mask(v).numpy()
    np.testing.assert_array_equal(by_length, [[0, 0, 3, 4, 0, 0], [0, 2, 0, 0, 0, 0]])
    labels = np.array([2, 2])
    by_label = mask([v, labels], training=True).numpy()
    np.testing.assert_array_equal(by_label, [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]])
    one_hot = mask([v, np.eye(3, dtype=np.float32)[labels]], training=True).numpy()
    np.testing.assert_array_equal(one_hot, by_label)
    np.testing.assert_array_equal(mask([v, labels], training=False).numpy(), by_length)


def test_decoder_shapes():
    decoder = kcaps.layers.CapsuleDecoder((28, 28, 1))
    out = decoder(tf.zeros([2, 160]))
    assert out.shape == (2, 28, 28, 1)
    assert decoder.count_params() == 160 * 512 + 512 + 512 * 1024 + 1024 + 1024 * 784 + 784


def test_decoder_initializers_draw_their_spread_and_old_configs_keep_glorot_uniform():
    def spreads(decoder):
        return [float(np.std(layer.kernel.numpy())) for layer in decoder.hidden + [decoder.pixels]]

    # He-normal: std sqrt(2 / fan_in); Glorot (normal or uniform): sqrt(2 / (fan_in + fan_out))
    fans = [(160, 512), (512, 1024), (1024, 784)]
    he, glorot = ([np.sqrt(2 / i) for i, _ in fans], [np.sqrt(2 / (i + o)) for i, o in fans])
    authors = kcaps.layers.CapsuleDecoder((28, 28, 1), kernel_initializer="he_normal",
                                          pixels_initializer="glorot_normal")
    authors.build((None, 160))
    np.testing.assert_allclose(spreads(authors), he[:2] + glorot[2:], rtol=0.03)
    config = authors.get_config()
    assert config["kernel_initializer"]["class_name"] == "HeNormal"
    assert config["pixels_initializer"]["class_name"] == "GlorotNormal"
    for key in ("kernel_initializer", "pixels_initializer"):  # a config saved before the option
        del config[key]
    old = kcaps.layers.CapsuleDecoder.from_config(config)
    old.build((None, 160))
    np.testing.assert_allclose(spreads(old), glorot, rtol=0.03)
    assert old.get_config()["pixels_initializer"]["class_name"] == "GlorotUniform"
    # one initializer per layer: equal shapes must not get equal draws
    same = kcaps.layers.CapsuleDecoder((8, 8, 1), hidden_units=(64, 64),
                                       kernel_initializer="he_normal")
    same.build((None, 64))
    assert not np.array_equal(same.hidden[0].kernel.numpy(), same.hidden[1].kernel.numpy())


@pytest.mark.parametrize("shape", [(None, 1152), (None, 6, 6, 8)])
def test_capsule_dense_rejects_wrong_rank(shape):
    layer = kcaps.layers.CapsuleDense(10, 16)
    with pytest.raises(ValueError, match=r"\(batch, num_capsules, capsule_dim\).*rank-"):
        layer.build(shape)


def test_capsule_dense_rejects_unknown_capsule_count():
    with pytest.raises(ValueError, match="must be known"):
        kcaps.layers.CapsuleDense(10, 16).build((None, None, 8))


def test_capsule_dense_rejects_a_model_input_of_wrong_rank_at_build_time():
    with pytest.raises(ValueError, match="rank-2"):
        kcaps.layers.CapsuleDense(10, 16)(tf.keras.Input((64,)))


@pytest.mark.parametrize("kwargs,field", [
    ({"num_capsules": 0, "capsule_dim": 16}, "num_capsules"),
    ({"num_capsules": 10, "capsule_dim": -1}, "capsule_dim"),
    ({"num_capsules": 10, "capsule_dim": 16, "routing_iterations": 0}, "routing_iterations"),
    ({"num_capsules": 10, "capsule_dim": 16, "routing_iterations": 2.5}, "routing_iterations"),
    ({"num_capsules": 10, "capsule_dim": 16, "weight_sharing": 0}, "weight_sharing"),
])
def test_capsule_dense_rejects_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`.*got"):
        kcaps.layers.CapsuleDense(**kwargs)


def test_capsule_dense_rejects_unknown_routing_and_lists_the_valid_ones():
    with pytest.raises(ValueError, match="dynamic, self_attention, xnor_agreement"):
        kcaps.layers.CapsuleDense(10, 16, routing="em")


@pytest.mark.parametrize("kwargs,match", [
    ({"capsule_types": 0, "capsule_dim": 8, "kernel_size": 9}, "`capsule_types`"),
    ({"capsule_types": 32, "capsule_dim": 0, "kernel_size": 9}, "`capsule_dim`"),
])
def test_primary_capsules_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kcaps.layers.PrimaryCapsules(**kwargs)


def test_primary_capsules_rejects_wrong_rank_and_too_small_inputs():
    layer = kcaps.layers.PrimaryCapsules(8, 8, kernel_size=9, strides=2)
    with pytest.raises(ValueError, match=r"rank-3 input of shape \(None, 28, 28\)"):
        layer.build((None, 28, 28))
    with pytest.raises(ValueError, match="no positions"):
        kcaps.layers.PrimaryCapsules(8, 8, kernel_size=9).build((None, 5, 5, 3))


def test_weight_sharing_named_modes_need_capsule_types():
    with pytest.raises(ValueError, match="capsule_types"):
        kcaps.layers.CapsuleDense(10, 16, weight_sharing="type").build((None, 12, 8))
