"""kcaps.pruning.report: sparsity per layer, m-by-n groups and FLOPs."""
import os

import numpy as np
import pytest

import kcaps
from kcaps import pruning


def test_sparsity_report_counts_zeros_and_checks_groups():
    model = kcaps.models.small_capsnet()
    kernel = model.get_layer("conv2").kernel
    values = kernel.numpy()
    values[..., :16] = 0.0
    kernel.assign(values)
    row = next(r for r in pruning.sparsity_report(model) if r["layer"] == "conv2")
    assert (row["zeros"], row["size"], row["sparsity"]) == (5 * 5 * 32 * 16, values.size, 0.25)
    assert row["m_by_n"] is False
    two_of_four = np.tile(np.array([1.0, 0.0, 0.0, 2.0]), (3, 2))  # (out=3, in=8) as [in, out]
    assert pruning.has_m_by_n(two_of_four.T) and not pruning.has_m_by_n(np.ones((8, 3)))
    assert pruning.summarize([row])["sparsity"] == 0.25


def test_flop_count_scales_with_the_pruned_channels():
    model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2))
    small = pruning.prune_channels(model, 0.5)
    conv2 = 2 * 5 * 5 * 3 * 3 * 8 * 16  # output positions x kernel x cin x cout, 2 per MAC
    assert pruning.count_flops(model) - pruning.count_flops(small) > 0.7 * conv2
    assert pruning.count_flops(model, batch_size=2) == pytest.approx(2 * pruning.count_flops(model),
                                                                      rel=1e-3)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
