"""CapsuleDense against a NumPy reference of Sabour et al.'s projection and routing."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps
from conftest import numpy_routing


def _layer_and_inputs(routing="dynamic", iterations=3, num_in=12, dim_in=8, num_out=5, dim_out=6,
                      batch=4, **kwargs):
    rng = np.random.default_rng(42)
    u = kcaps.ops.squash(rng.normal(size=(batch, num_in, dim_in)).astype(np.float32)).numpy()
    layer = kcaps.layers.CapsuleDense(num_out, dim_out, routing=routing,
                                      routing_iterations=iterations, **kwargs)
    layer.build((None, num_in, dim_in))
    w = rng.normal(scale=0.5, size=layer.kernel.shape).astype(np.float32)
    layer.kernel.assign(w)
    return layer, u, w


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_dynamic_routing_matches_numpy(iterations):
    layer, u, w = _layer_and_inputs(iterations=iterations)
    u_hat = np.einsum("bid,idjk->bijk", u, w)  # u_hat[j|i] = W[i, j] u[i]
    expected = numpy_routing(u_hat, iterations)
    np.testing.assert_allclose(layer(u).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_one_iteration_couples_uniformly():
    layer, u, w = _layer_and_inputs(iterations=1)
    u_hat = np.einsum("bid,idjk->bijk", u, w)
    s = u_hat.sum(axis=1) / u_hat.shape[2]  # c_ij = 1 / num_out
    np.testing.assert_allclose(layer(u).numpy(), kcaps.ops.squash(s).numpy(), rtol=1e-5, atol=1e-6)


def test_routing_changes_the_output_after_the_first_iteration():
    one, u, w = _layer_and_inputs(iterations=1)
    three, _, _ = _layer_and_inputs(iterations=3)
    assert np.abs(one(u).numpy() - three(u).numpy()).max() > 1e-3


def test_gradients_reach_every_transformation_matrix():
    layer, u, _ = _layer_and_inputs()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(kcaps.ops.safe_norm(layer(u)))
    grad = tape.gradient(loss, layer.kernel).numpy()
    assert np.all(np.isfinite(grad))
    assert np.all(np.abs(grad).reshape(grad.shape[0], -1).max(axis=1) > 0)


@pytest.mark.parametrize("sharing,expected_matrices", [(4, 4), ("type", 3), ("position", 4)])
def test_weight_sharing_uses_the_documented_matrix_per_capsule(sharing, expected_matrices):
    # 12 input capsules = 4 positions x 3 types, ordered position-major (i = position * 3 + type)
    layer, u, w = _layer_and_inputs(weight_sharing=sharing, capsule_types=3)
    assert layer.kernel.shape[0] == expected_matrices
    i = np.arange(12)
    index = {4: i % 4, "type": i % 3, "position": i // 3}[sharing]
    u_hat = np.einsum("bid,idjk->bijk", u, w[index])
    np.testing.assert_allclose(layer(u).numpy(), numpy_routing(u_hat, 3), rtol=1e-5, atol=1e-6)


def test_use_bias_adds_to_the_total_input():
    layer, u, w = _layer_and_inputs(use_bias=True)
    bias = np.random.default_rng(3).normal(size=layer.bias.shape).astype(np.float32)
    layer.bias.assign(bias)
    u_hat = np.einsum("bid,idjk->bijk", u, w)
    np.testing.assert_allclose(layer(u).numpy(), numpy_routing(u_hat, 3, bias=bias),
                               rtol=1e-5, atol=1e-6)
