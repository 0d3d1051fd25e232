"""kcaps.projections: weight-sharing layouts against the gathered kernel."""
import numpy as np
import pytest

import kcaps


@pytest.mark.parametrize("sharing,order", [
    ("type", "position_major"), ("position", "position_major"), (4, "position_major"),
    (6, "type_major"), (3, "type_major"), (5, "position_major"), (4, "type_major")])
def test_every_sharing_layout_matches_the_gathered_kernel(sharing, order):
    # 24 capsules = 4 positions x 6 types; some layouts use the reshape path, others the gather
    layer = kcaps.layers.CapsuleDense(3, 4, weight_sharing=sharing, capsule_types=6,
                                      sharing_order=order, routing_iterations=1)
    u = np.random.default_rng(0).normal(size=(2, 24, 5)).astype(np.float32)
    layer.build(u.shape)
    w = np.random.default_rng(1).normal(size=layer.kernel.shape).astype(np.float32)
    layer.kernel.assign(w)
    p, t = np.arange(24) // 6, np.arange(24) % 6  # kcaps order: i = p * 6 + t
    index = {"type": t, "position": p}.get(sharing)
    if index is None:
        index = (t * 4 + p if order == "type_major" else np.arange(24)) % sharing
    u_hat = np.einsum("bid,idjk->bjik", u, w[index])
    np.testing.assert_allclose(layer.projection(u).numpy(), u_hat, rtol=1e-5, atol=1e-6)


def test_type_major_tiling_is_the_papers_digit_capsule_sharing():
    # FasTrCaps' capsule type t at position p is row 36 t + p and uses matrix (36 t + p) mod 32
    index = kcaps.projections.sharing_index(1152, 32, capsule_types=32, sharing_order="type_major")
    p, t = np.arange(1152) // 32, np.arange(1152) % 32
    np.testing.assert_array_equal(index, (36 * t + p) % 32)
    assert kcaps.projections.sharing_layout(index) is None  # no reshape form: gathered
    position = kcaps.projections.sharing_index(1152, 36, capsule_types=32,
                                               sharing_order="type_major")
    np.testing.assert_array_equal(position, p)  # K = 36 type-major is per-position sharing
