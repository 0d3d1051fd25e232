"""kcaps.small_decoder: FasTrCaps' selected capsule."""
import numpy as np
import pytest

import kcaps


def test_selected_capsule_uses_labels_in_training_and_lengths_at_inference():
    v = np.zeros((2, 3, 2), np.float32)
    v[0, 1], v[0, 2], v[1, 0], v[1, 2] = [3, 4], [1, 0], [0, 2], [0, 1]
    select = kcaps.small_decoder.SelectedCapsule()
    np.testing.assert_array_equal(select(v).numpy(), [[3, 4], [0, 2]])
    np.testing.assert_array_equal(select([v, np.array([2, 2])], training=True).numpy(),
                                  [[1, 0], [0, 1]])
    np.testing.assert_array_equal(select([v, np.array([2, 2])], training=False).numpy(),
                                  [[3, 4], [0, 2]])
    with pytest.raises(ValueError, match="rank-2"):
        select.build((None, 6))
