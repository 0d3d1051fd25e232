"""cnn_capsnet: a CNN backbone whose primary-capsule count follows its channel count."""
import pytest

import kcaps


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
