"""Models of issue 4: deep capsule stacks and a CNN backbone whose channels set the capsule count."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps


def test_deep_capsnet_defaults_are_peer_et_al_stack():
    model = kcaps.models.deep_capsnet()
    assert model.get_layer("conv1").filters == 512
    assert model.get_layer("primary_capsules").output_shape == (None, 6 * 6 * 64, 8)
    for k in range(1, 5):
        assert model.get_layer(f"capsules_{k}").output_shape == (None, 32, 12)
    assert model.get_layer("class_capsules").output_shape == (None, 10, 16)
    kernel_counts = [2304 * 8 * 32 * 12] + [32 * 12 * 32 * 12] * 3 + [32 * 12 * 10 * 16]
    capsule_params = sum(layer.count_params() for layer in model.layers
                         if isinstance(layer, kcaps.layers.CapsuleDense))
    assert capsule_params == sum(kernel_counts)


@pytest.mark.parametrize("depth", [0, 1, 3, 5])
def test_deep_capsnet_depth_counts_and_dims_are_configurable(depth):
    counts = [8 + k for k in range(depth)]
    model = kcaps.models.deep_capsnet(num_intermediate=depth, intermediate_capsules=counts,
                                      intermediate_dims=6, conv_filters=16, primary_types=4)
    capsule_layers = [l for l in model.layers if isinstance(l, kcaps.layers.CapsuleDense)]
    assert [l.num_capsules for l in capsule_layers] == counts + [10]
    config = model.get_config()
    rebuilt = kcaps.models.CapsuleModel.from_config(config)
    assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]


def test_deep_capsnet_ccm_layer_and_bad_arguments():
    model = kcaps.models.deep_capsnet(num_intermediate=1, conv_filters=16, primary_types=4,
                                      ccm_weight=0.1)
    assert isinstance(model.get_layer("ccm"), kcaps.losses.ChannelCorrelationLoss)
    with pytest.raises(ValueError, match="`intermediate_capsules` needs 3 values"):
        kcaps.models.deep_capsnet(num_intermediate=3, intermediate_capsules=[8, 8])
    with pytest.raises(ValueError, match="`num_intermediate` must be an integer >= 0, got -1"):
        kcaps.models.deep_capsnet(num_intermediate=-1)
    with pytest.raises(ValueError, match="`ccm_weight` must be >= 0"):
        kcaps.models.deep_capsnet(ccm_weight=-1.0)


def test_cnn_capsnet_primary_capsules_follow_the_channel_count():
    for channels in (256, 128, 40):
        model = kcaps.models.cnn_capsnet(conv_filters=(32, 64, 128, channels))
        primary = model.get_layer("primary_capsules")
        assert primary.output_shape == (None, channels // 8, 8)  # kernel covers the 3x3 map
        assert primary.conv.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="leaves no positions"):
        kcaps.models.cnn_capsnet(input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="make no 8-D capsule type"):
        kcaps.models.cnn_capsnet(conv_filters=(32, 4), kernel_sizes=(5, 3), strides=(1, 2))


def _numpy_ccm(maps, eps=1e-6):
    mean_maps = maps.mean(axis=0).reshape(-1, maps.shape[-1])
    c = mean_maps.shape[1]
    values = []
    for i in range(c):
        for j in range(c):
            if i != j:
                a, b = mean_maps[:, i] - mean_maps[:, i].mean(), mean_maps[:, j] - mean_maps[:, j].mean()
                values.append(abs(np.mean(a * b) / np.sqrt((np.mean(a * a) + eps) * (np.mean(b * b) + eps))))
    return np.mean(values)


def test_ccm_loss_is_minus_weight_times_the_mean_absolute_channel_correlation():
    maps = np.random.default_rng(0).normal(size=(3, 5, 5, 4)).astype(np.float32)
    maps[..., 1] = 2 * maps[..., 0] + 1  # perfectly correlated pair
    expected = _numpy_ccm(maps.astype(np.float64))
    assert float(kcaps.losses.channel_correlation(maps)) == pytest.approx(expected, rel=1e-4)
    layer = kcaps.losses.ChannelCorrelationLoss(weight=0.5)
    out = layer(maps, training=True)
    np.testing.assert_array_equal(out.numpy(), maps)
    assert float(layer.losses[0]) == pytest.approx(-0.5 * expected, rel=1e-4)
    assert layer(maps, training=False) is not None and len(layer.losses) == 0
    clone = kcaps.losses.ChannelCorrelationLoss.from_config(layer.get_config())
    assert clone.weight == 0.5
    with pytest.raises(ValueError, match="at least 2 channels"):
        kcaps.losses.ChannelCorrelationLoss()(tf.zeros([1, 3, 3, 1]))
