"""int8 SUM as MEAN x count (`kcaps_tflite.int8_sums`): the same integers in every runtime."""
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from kcaps_tflite import convert, graph, int8_sums, micro, verify
from tests.tflite_helpers import eval_images, flatbuffer, representative, trained_model
from kcaps_training import cli


# The two kinds of SUM a capsule network has: |s|^2 over the last axis (keepdims), and a sum
# over input capsules (a middle axis, dropped).
SUMS = {"squared_length": lambda t: tf.reduce_sum(t * t, axis=-1, keepdims=True),
        "over_inputs": lambda t: tf.reduce_sum(t, axis=2)}


def _run(data, kind, inputs):
    """int8 outputs for every input: in TFLite Micro ("micro") or with a LiteRT op resolver."""
    if kind == "micro":
        interpreter = micro.MicroInterpreter(data, micro.find_arena_size(data))
        return np.stack([interpreter.invoke(q) for q in inputs])
    interpreter = Interpreter(model_content=data, experimental_op_resolver_type=kind)
    interpreter.allocate_tensors()
    runs = []
    for q in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], q)
        interpreter.invoke()
        runs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return np.stack(runs)


@pytest.fixture(scope="module", params=sorted(SUMS))
def one_sum(request):
    """(plain int8 bytes, rewritten bytes, int8 inputs) for a model that is one SUM."""
    x = tf.keras.Input((6, 4, 8))
    model = tf.keras.Model(x, tf.keras.layers.Lambda(SUMS[request.param])(x))
    values = (np.random.default_rng(0).normal(size=(80, 6, 4, 8)) * 0.7).astype(np.float32)
    plain = convert.convert(model, "int8", representative_data=values[:50])
    details = Interpreter(model_content=plain).get_input_details()[0]
    inputs = [verify.quantize(v[None], details) for v in values[50:]]
    return plain, int8_sums.sums_as_means(plain), inputs


def test_an_int8_sum_becomes_a_mean_times_its_count(one_sum):
    plain, rewritten, _ = one_sum
    before, after = graph.read(plain).op_counts(), graph.read(rewritten).op_counts()
    assert before["SUM"] == 1 and "MEAN" not in before
    assert "SUM" not in after and after["MEAN"] == 1
    assert after.get("MUL", 0) == before.get("MUL", 0) + 1
    assert int8_sums.sums_as_means(rewritten) == rewritten  # nothing left to rewrite


def test_the_rewrite_keeps_the_integers_and_runtimes_then_agree_bit_for_bit(one_sum):
    plain, rewritten, inputs = one_sum
    reference = _run(rewritten, OpResolverType.BUILTIN_REF, inputs)
    for kind in ("micro", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        np.testing.assert_array_equal(_run(rewritten, kind, inputs), reference)
    # The integers are the SUM's: TFLite Micro's SUM on the plain model gives them too.
    summed = _run(plain, "micro", inputs)
    assert summed.dtype == np.int8 and summed.shape == reference.shape
    assert np.abs(summed.astype(int) - reference).max() <= 1
    assert np.mean(summed == reference) >= 0.95


def test_sums_stay_sums_by_default_and_a_micro_build_matches_litert_builtin_top1():
    assert "SUM" in graph.read(flatbuffer("int8")).op_counts()
    data = convert.convert(trained_model(), "int8", representative_data=representative(),
                           **convert.MICRO_BUILD)
    ops = graph.read(data).op_counts()
    assert "SUM" not in ops and "SPACE_TO_DEPTH" not in ops
    x, y = eval_images(100)
    report = micro.analyze(data, x, y, targets=("mcu-256k-64k",))
    assert report.agreement_with_litert_builtin == 1.0
    assert report.agreement_with_litert >= 0.98  # XNNPACK requantizes in fp32: rare near-ties


def test_for_micro_is_an_int8_option(tmp_path, capsys):
    model_path = tmp_path / "model.keras"
    trained_model().save(model_path)
    assert cli.main(["convert", str(model_path), "--precision", "float32", "--for-micro"]) == 2
    assert "--for-micro builds an int8 model; got --precision float32" in capsys.readouterr().err


def test_a_sum_over_the_dynamic_batch_axis_is_left_alone():
    x = tf.keras.Input((4, 8))
    model = tf.keras.Model(x, tf.keras.layers.Lambda(
        lambda t: tf.reduce_sum(t, axis=0, keepdims=True) + 0 * t)(x))
    values = np.random.default_rng(1).normal(size=(20, 4, 8)).astype(np.float32)
    plain = convert.convert(model, "int8", representative_data=values)
    assert "SUM" in graph.read(plain).op_counts()
    assert int8_sums.sums_as_means(plain) == plain
