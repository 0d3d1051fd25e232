"""deep_capsnet: Peer et al.'s stack by default, configurable depth and sizes, CCM, bad input."""
import pytest

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
