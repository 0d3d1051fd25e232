import numpy as np
import pytest
import tensorflow as tf

import kcaps


def numpy_margin(one_hot, lengths, m_plus=0.9, m_minus=0.1, down=0.5):
    present = one_hot * np.maximum(0, m_plus - lengths) ** 2
    absent = down * (1 - one_hot) * np.maximum(0, lengths - m_minus) ** 2
    return (present + absent).sum(-1).mean()


def test_margin_loss_matches_numpy_for_ids_and_one_hot():
    rng = np.random.default_rng(0)
    lengths = rng.uniform(size=(6, 10)).astype(np.float32)
    ids = rng.integers(0, 10, size=6)
    one_hot = np.eye(10, dtype=np.float32)[ids]
    loss = kcaps.losses.MarginLoss()
    expected = numpy_margin(one_hot, lengths)
    np.testing.assert_allclose(float(loss(ids, lengths)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(loss(ids[:, None], lengths)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(loss(one_hot, lengths)), expected, rtol=1e-5)


def test_margin_loss_with_two_hot_labels_and_custom_margins():
    lengths = np.array([[0.95, 0.5, 0.05]], np.float32)
    two_hot = np.array([[1, 1, 0]], np.float32)
    loss = kcaps.losses.MarginLoss(m_plus=0.8, m_minus=0.2, down_weight=0.25)
    np.testing.assert_allclose(float(loss(two_hot, lengths)),
                               numpy_margin(two_hot, lengths, 0.8, 0.2, 0.25), rtol=1e-6)


def test_reconstruction_loss_is_scaled_sum_of_squared_errors():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)
    r = rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)
    expected = 0.0005 * ((x - r) ** 2).reshape(4, -1).sum(-1).mean()
    np.testing.assert_allclose(float(kcaps.losses.ReconstructionLoss()(x, r)), expected, rtol=1e-5)


def test_losses_round_trip_their_config():
    loss = kcaps.losses.MarginLoss(m_plus=0.8, m_minus=0.2, down_weight=0.3)
    assert kcaps.losses.MarginLoss.from_config(loss.get_config()).get_config() == loss.get_config()


@pytest.mark.parametrize("kwargs", [{"m_plus": 0.1, "m_minus": 0.9}, {"down_weight": -1.0}])
def test_margin_loss_rejects_bad_margins(kwargs):
    with pytest.raises(ValueError, match="MarginLoss"):
        kcaps.losses.MarginLoss(**kwargs)


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
