"""The int8 forms for XNNPACK (`kcaps_tflite.xnnpack_int8`): same numbers, delegated, TFLM-ready."""
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from kcaps_tflite import graph, micro, profile, verify, xnnpack_int8
from tests.tflite_helpers import eval_images, flatbuffer


def numpy_conv(x, kernel, bias):
    """Stride-1 "valid" convolution, NHWC, the textbook sum."""
    k = kernel.shape[0]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - k + 1, w - k + 1, kernel.shape[-1]))
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("nhwc,cf->nhwf", x[:, dy:dy + h - k + 1, dx:dx + w - k + 1],
                             kernel[dy, dx])
    return out + bias


@pytest.mark.parametrize("k, c, f", [(5, 1, 3), (3, 2, 4), (9, 3, 2)])
def test_space_to_depth_convolution_is_the_convolution(k, c, f):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2, 12, 14, c)).astype(np.float32)
    kernel, bias = rng.normal(size=(k, k, c, f)), rng.normal(size=f)
    layer = xnnpack_int8.SpaceToDepthConv2D(k, f, activation="relu")
    layer.build(x.shape)
    layer.set_weights([layer.block_kernel(kernel), np.tile(bias, 4)])
    np.testing.assert_allclose(layer(x).numpy(), np.maximum(numpy_conv(x, kernel, bias), 0),
                               atol=1e-4)


def test_only_stride_1_valid_few_channel_convolutions_are_rewritten():
    image = tf.keras.Input((12, 12, 1))
    h = tf.keras.layers.Conv2D(4, 3, name="first")(image)  # 1 channel: rewritten
    h = tf.keras.layers.Conv2D(4, 3, name="wide")(h)  # 4 channels: kept
    strided = tf.keras.layers.Conv2D(2, 3, strides=2, name="strided")(image)
    model = tf.keras.Model(image, [h, strided])
    types = {layer.name: type(layer).__name__
             for layer in xnnpack_int8.space_to_depth_convolutions(model).layers}
    assert types["first"] == "SpaceToDepthConv2D"
    assert types["wide"] == types["strided"] == "Conv2D"
    plain = tf.keras.Model(image, tf.keras.layers.Conv2D(4, 3, strides=2)(image))
    assert xnnpack_int8.space_to_depth_convolutions(plain) is plain


def _tensors(data, op_name):
    obj = flatbuffer_utils.convert_bytearray_to_object(data)
    codes = [flatbuffer_utils.get_builtin_code_from_operator_code(obj.operatorCodes[op.opcodeIndex])
             for op in obj.subgraphs[0].operators]
    code = getattr(schema.BuiltinOperator, op_name)
    return obj, [op for op, c in zip(obj.subgraphs[0].operators, codes) if c == code]


def plain_int8():
    return flatbuffer("int8", xnnpack_forms=False)


@pytest.mark.slow
def test_int8_first_convolution_gives_the_same_integers():
    new, old = flatbuffer("int8"), plain_int8()
    assert {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE"} <= set(graph.read(new).op_counts())
    _, (plain_conv, *_) = _tensors(old, "CONV_2D")
    _, (depth_to_space,) = _tensors(new, "DEPTH_TO_SPACE")
    x, _ = eval_images(8)
    outputs = []
    for data, tensor in ((old, plain_conv.outputs[0]), (new, depth_to_space.outputs[0])):
        interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()[0]
        scale, zero = details["quantization"]
        runs = []
        for image in x:
            q = np.clip(np.round(image / scale + zero), -128, 127).astype(np.int8)
            interpreter.set_tensor(details["index"], q.reshape(details["shape"]))
            interpreter.invoke()
            runs.append(interpreter.get_tensor(int(tensor)).copy())
        outputs.append(np.stack(runs))
    assert outputs[0].dtype == np.int8 and outputs[0].shape == outputs[1].shape
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.slow
def test_int8_batch_matmuls_have_zero_point_0_and_all_run_in_xnnpack(tmp_path):
    data = flatbuffer("int8")
    obj, matmuls = _tensors(data, "BATCH_MATMUL")
    assert matmuls
    tensors = obj.subgraphs[0].tensors
    for op in matmuls:
        assert list(tensors[op.inputs[1]].quantization.zeroPoint) == [0]
    _, plain = _tensors(plain_int8(), "BATCH_MATMUL")
    plain_tensors = flatbuffer_utils.convert_bytearray_to_object(plain_int8()).subgraphs[0].tensors
    assert any(plain_tensors[op.inputs[1]].quantization.zeroPoint[0] != 0 for op in plain)
    path = tmp_path / "int8.tflite"
    path.write_bytes(data)
    rows = profile.op_profile(path, num_runs=3, use_xnnpack=True).rows
    assert not [row.node_type for row in rows if not row.delegate and row.node_type == "BATCH_MATMUL"]
    assert any("QS8" in row.node_type and "Batch Matrix" in row.node_type for row in rows)


@pytest.mark.slow
def test_int8_forms_keep_the_answers_in_litert_and_tflite_micro():
    x, y = eval_images(60)
    new, old = verify.predict(flatbuffer("int8"), x), verify.predict(plain_int8(), x)
    assert np.mean(new.argmax(-1) == old.argmax(-1)) >= 0.95
    scale = verify.load_interpreter(plain_int8()).get_output_details()[0]["quantization"][0]
    assert np.median(np.abs(new - old)) <= 2 * scale
    micro.check_ops(flatbuffer("int8"))
    interpreter = micro.MicroInterpreter(flatbuffer("int8"), micro.find_arena_size(flatbuffer("int8")))
    np.testing.assert_array_equal(interpreter.predict(x[:20]).argmax(-1), new[:20].argmax(-1))
