import numpy as np
import pytest

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
