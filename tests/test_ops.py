import numpy as np
import pytest
import tensorflow as tf

import kcaps
from conftest import numpy_squash


def test_squash_matches_numpy_reference():
    s = np.random.default_rng(0).normal(size=(4, 10, 16)).astype(np.float32) * 3
    np.testing.assert_allclose(kcaps.ops.squash(s).numpy(), numpy_squash(s), rtol=1e-5, atol=1e-6)


def test_squash_keeps_direction_and_bounds_length():
    s = tf.constant([[3.0, 4.0], [0.03, 0.04]])
    v = kcaps.ops.squash(s).numpy()
    lengths = np.linalg.norm(v, axis=-1)
    np.testing.assert_allclose(lengths, [25 / 26, 0.0025 / 1.0025], rtol=1e-3)
    np.testing.assert_allclose(v / lengths[:, None], s.numpy() / np.linalg.norm(s, axis=-1)[:, None],
                               rtol=1e-5)


def test_squash_value_and_gradient_are_finite_at_zero():
    s = tf.zeros([2, 3, 8])
    with tf.GradientTape() as tape:
        tape.watch(s)
        v = kcaps.ops.squash(s)
        total = tf.reduce_sum(v)
    grad = tape.gradient(total, s).numpy()
    assert np.all(np.isfinite(v.numpy())) and np.all(v.numpy() == 0)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)  # the squash is flat (cubic) at the origin


def test_squash_along_another_axis():
    s = np.random.default_rng(1).normal(size=(3, 8, 5)).astype(np.float32)
    np.testing.assert_allclose(kcaps.ops.squash(s, axis=1).numpy(), numpy_squash(s, axis=1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_squash_in_half_precision_is_computed_in_float32(dtype):
    s = tf.constant([[1e-4, 0.0], [300.0, 400.0]], dtype)
    v = kcaps.ops.squash(s)
    assert v.dtype == dtype
    assert np.all(np.isfinite(tf.cast(v, tf.float32).numpy()))
    np.testing.assert_allclose(np.linalg.norm(tf.cast(v, tf.float32).numpy()[1]), 1.0, rtol=1e-2)


def test_squash_approx_is_piecewise_linear():
    s = tf.constant([[1.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(kcaps.ops.squash_approx(s).numpy(), [[0.5, 0.0], [0.0, 1.0]],
                               atol=1e-6)


def test_unknown_squash_name_lists_valid_ones():
    with pytest.raises(ValueError, match="approx"):
        kcaps.ops.get_squash("tanh")


def test_one_hot_labels_accepts_ids_and_one_hot():
    ids = kcaps.ops.one_hot_labels(tf.constant([[2], [0]]), 3).numpy()
    hot = kcaps.ops.one_hot_labels(tf.constant([[0, 0, 1], [1, 0, 0]]), 3).numpy()
    np.testing.assert_array_equal(ids, [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(hot, ids)
