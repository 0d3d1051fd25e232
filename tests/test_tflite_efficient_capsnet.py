"""efficient_capsnet through every deployment path: float32, int8, the microcontroller build and
TFLite Micro, with builtin ops only and the same top-1 as Keras on real digits."""
import functools

import numpy as np
import pytest
import tensorflow as tf

import kcaps
from kcaps_tflite import convert, graph, micro, verify

pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=None)
def _trained(mnist_dir):
    from kcaps_training import datasets

    data = datasets.load_real_digits(mnist_dir)
    tf.keras.utils.set_random_seed(0)
    model = kcaps.models.efficient_capsnet(decoder=True, bn_momentum=0.9)
    model.compile(tf.keras.optimizers.Adam(2e-3))
    model.fit(data.x_train[:2048], data.y_train[:2048], batch_size=64, epochs=2, verbose=0)
    return model, data


@functools.lru_cache(maxsize=None)
def _flatbuffer(mnist_dir, precision, micro_build):
    model, data = _trained(mnist_dir)
    options = convert.MICRO_BUILD if micro_build else {}
    return convert.convert(model, precision, representative_data=data.x_train[:100], **options)


def test_float32_lengths_equal_keras(mnist_dir):
    model, data = _trained(mnist_dir)
    x, y = data.x_test[:64], data.y_test[:64]
    report = verify.verify(model, _flatbuffer(mnist_dir, "float32", False), x, y)
    assert report.agreement == 1.0 and report.max_length_difference < 1e-4


@pytest.mark.parametrize("micro_build", [False, True], ids=["int8", "micro_build"])
def test_int8_has_builtin_ops_only_and_agrees_with_keras(mnist_dir, micro_build):
    model, data = _trained(mnist_dir)
    flatbuffer = _flatbuffer(mnist_dir, "int8", micro_build)
    g = graph.read(flatbuffer)
    assert not any(op.custom for op in g.operators), [op.name for op in g.operators if op.custom]
    assert "EINSUM" not in g.op_counts() and g.input_types == ("int8",)
    assert {"DEPTHWISE_CONV_2D", "BATCH_MATMUL", "SOFTMAX"} <= set(g.op_counts())
    x, y = data.x_test[:200], data.y_test[:200]
    report = verify.verify(model, flatbuffer, x, y, precision="int8")
    assert report.agreement >= verify.MIN_AGREEMENT["int8"]
    assert report.keras_accuracy > 0.8  # trained enough that top-1 means something
    assert abs(report.accuracy - report.keras_accuracy) <= 0.02


def test_micro_build_runs_in_tflite_micro_like_litert(mnist_dir):
    _, data = _trained(mnist_dir)
    x, y = data.x_test[:100], data.y_test[:100]
    report = micro.analyze(_flatbuffer(mnist_dir, "int8", True), x, y)
    assert report.samples == 100
    assert report.agreement_with_litert >= 0.98
    assert abs(report.accuracy - report.litert_accuracy) <= 0.02
    # the squashes' SQRT and EXP (float-only kernels in TFLite Micro) are the only float islands
    assert {name.split("#")[0] for name in report.float_operators} == {"SQRT", "EXP"}
    assert report.arena_bytes < 128 * 1024


def _int8_lengths(squash, s):
    x = tf.keras.Input((10, 16))
    model = tf.keras.Model(x, kcaps.layers.CapsuleLength()(tf.keras.layers.Lambda(squash)(x)))
    flatbuffer = convert.convert(model, "int8", representative_data=s[:200], **convert.MICRO_BUILD)
    return flatbuffer, verify.predict(flatbuffer, s[200:])


def test_int8_efficient_squash_keeps_long_capsules_long():
    """Capsules of length 0.3 ... 30 in one tensor: long ones must stay long in int8. Computed as
    `s * ((1 - exp(-|s|)) / |s|)`, the int8 range of 1 / |s| is set by the short ones and long
    capsules came out with length 0 (a trained model's 0.998 became 0)."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(400, 10, 16)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    s = directions * np.exp(rng.uniform(np.log(0.3), np.log(30.0), size=(400, 10, 1)))
    long = np.linalg.norm(s[200:], axis=-1) > 5.0  # true length > 0.993

    def naive(t):  # the same function through 1 / |s|
        norm = tf.sqrt(tf.reduce_sum(t * t, axis=-1, keepdims=True) + 1e-7)
        return t * ((1.0 - tf.exp(-1.0 * norm)) / norm)

    _, naive_lengths = _int8_lengths(naive, s)
    assert np.max(np.abs(naive_lengths[long] - 1.0)) > 0.1  # what went wrong
    flatbuffer, lengths = _int8_lengths(kcaps.ops.squash_efficient, s)
    assert "L2_NORMALIZATION" in graph.read(flatbuffer).op_counts()
    assert np.max(np.abs(lengths[long] - 1.0)) < 0.02
