"""int8 MEAN as an all-ones FULLY_CONNECTED (`kcaps_tflite.cmsis_nn_int8`): the same integers.

TFLite Micro's arithmetic (QuantizeMultiplier, the MEAN's multiplier divided by the count, the
double-rounding requantization) is written out here in plain Python, apart from the library's.
The firmware build of a model with both kinds of reduction is in tests/test_firmware.py.
"""
import math

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from kcaps_tflite import cmsis_nn_int8, convert, graph, micro, verify


def _quantize_multiplier(real):
    q, shift = math.frexp(real)
    fixed = math.floor(q * 2**31 + 0.5)
    if fixed == 2**31:
        fixed, shift = fixed // 2, shift + 1
    return fixed, shift


def _mean_requantization(s_in, s_out, n):
    """reduce_common.cc + reference/reduce.h: QuantizeMultiplier(s_in / s_out), then the
    multiplier shifted left by floor(log2 n) and divided by n."""
    m, e = _quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    k = min(int(math.log2(n)), 32, 31 + e)
    return (m << k) // n, e - k


def _fc_requantization(s_in, s_w, s_out):
    """fully_connected_common.cc without bias: the scales multiply in float32."""
    product = np.float32(s_in) * np.float32(s_w)
    return _quantize_multiplier(float(product) / float(np.float32(s_out)))


def _requantize(acc, m, shift):
    """MultiplyByQuantizedMultiplier: rounding doubling high multiply, rounding right shift."""
    x = acc * 2 ** max(shift, 0)
    product = x * m
    high = (product + (2**30 if product >= 0 else 1 - 2**30))
    high = high // 2**31 if high >= 0 else -((-high) // 2**31)
    right = max(-shift, 0)
    mask = 2**right - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


@pytest.mark.parametrize("n", [8, 16, 128, 12, 1152])
def test_the_weight_scale_gives_the_means_requantization_exactly(n):
    rng = np.random.default_rng(n)
    found = 0
    for _ in range(20):
        s_in, s_out = (float(np.float32(v)) for v in rng.uniform(1e-3, 5e-2, 2))
        target = _mean_requantization(s_in, s_out, n)
        s_w = cmsis_nn_int8.weight_scale(s_in, s_out, target)
        if n & (n - 1) == 0:  # a power of two: always, with s_w = 1 / n
            assert s_w == 1 / n
        if target[0] < 2**30:  # a multiplier QuantizeMultiplier never returns
            assert s_w is None
        if s_w is None:
            continue
        found += 1
        assert _fc_requantization(s_in, s_w, s_out) == target
        z_in, z_out = -5, 3
        for acc in range(n * (-128 - z_in), n * (127 - z_in) + 1, max(1, n // 4)):
            out = _requantize(acc, *target) + z_out
            assert out == _requantize(acc, *_fc_requantization(s_in, s_w, s_out)) + z_out
    assert found > 0


def test_a_quantized_multiplier_below_2_30_has_no_weight_scale():
    # n = 12: M' = floor(M * 8 / 12) < 2**30 whenever M < 1.5 * 2**30.
    s_in, s_out = 0.02, 0.016  # ratio 1.25: M = 1.25 * 2**30
    target = _mean_requantization(s_in, s_out, 12)
    assert target[0] < 2**30
    assert cmsis_nn_int8.weight_scale(s_in, s_out, target) is None


# The reductions of a capsule network: |s|^2 over the 8 components (keepdims), a sum over 16
# input capsules (a middle axis), the class score's |s|^2 without keepdims; then counts that are
# not powers of two. With each: what the rewrite does on these (seeded) scales. "folded": an
# all-ones FULLY_CONNECTED writes the SUM's tensor and the count MUL goes; "rescaled": it writes
# the MEAN's tensor at a nearby scale and the count MUL stays (still the identity); "kept": the
# MEAN's multiplier is below 2**30, which no weight scale gives, so the MEAN stays.
REDUCTIONS = {
    "squared_length": (lambda t: tf.reduce_sum(t * t, axis=-1, keepdims=True), "folded"),
    "over_inputs": (lambda t: tf.reduce_sum(t, axis=2), "folded"),
    "score": (lambda t: tf.reduce_sum(t * t, axis=-1), "folded"),
    "over_12_inputs": (lambda t: tf.reduce_sum(tf.nn.relu(t[:, :, :12]), axis=2), "folded"),
    "over_10_inputs": (lambda t: tf.reduce_sum(tf.nn.relu(t[:, :, :10]), axis=2), "rescaled"),
    "squares_over_12": (lambda t: tf.reduce_sum(t[:, :, :12] * t[:, :, :12], axis=2), "kept"),
}


def _micro_outputs(data, inputs):
    interpreter = micro.MicroInterpreter(data, micro.find_arena_size(data))
    return np.stack([interpreter.invoke(q) for q in inputs])


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_the_micro_build_computes_the_same_integers(name):
    reduction, outcome = REDUCTIONS[name]
    x = tf.keras.Input((4, 16, 8))
    model = tf.keras.Model(x, tf.keras.layers.Lambda(reduction)(x))
    values = (np.random.default_rng(0).normal(size=(60, 4, 16, 8)) * 0.7).astype(np.float32)
    options = {**convert.MICRO_BUILD, "cmsis_nn_forms": False}
    means = convert.convert(model, "int8", representative_data=values[:40], **options)
    notes = []
    rewritten = cmsis_nn_int8.means_as_fully_connected(means, notes)
    assert convert.convert(model, "int8", representative_data=values[:40],
                           **convert.MICRO_BUILD) == rewritten
    before, after = graph.read(means).op_counts(), graph.read(rewritten).op_counts()
    assert before["MEAN"] == 1
    if outcome == "kept":
        assert rewritten == means and len(notes) == 1 and "(count 12)" in notes[0]
        multiplier = int(notes[0].split("multiplier (")[1].split(",")[0])
        assert multiplier < 2**30
    else:
        assert "MEAN" not in after and not notes and after["FULLY_CONNECTED"] == 1
        muls = after.get("MUL", 0) - before["MUL"]
        assert muls == (-1 if outcome == "folded" else 0)
        # A reduction that is not over the last axis reads a TRANSPOSE that puts it last.
        assert ("TRANSPOSE" in after) == name.startswith("over")
    details = Interpreter(model_content=means).get_input_details()[0]
    inputs = [verify.quantize(v[None], details) for v in values[40:]]
    np.testing.assert_array_equal(_micro_outputs(rewritten, inputs), _micro_outputs(means, inputs))


def test_a_model_without_int8_mean_is_returned_unchanged():
    x = tf.keras.Input((4, 8))
    model = tf.keras.Model(x, tf.keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=-1))(x))
    data = convert.convert(model, "float32")
    assert graph.read(data).op_counts()["MEAN"] == 1
    assert cmsis_nn_int8.means_as_fully_connected(data) == data
