"""Larq Compute Engine conversion: binary ops in the file, same top-1 as Keras on real digits."""
import numpy as np
import pytest
import tensorflow as tf

import kcaps

lce = pytest.importorskip("kcaps_tflite.lce")
pytest.importorskip("larq_compute_engine")


def _briefly_trained(head, real_digits):
    tf.keras.utils.set_random_seed(0)
    model = kcaps.models.backbone_capsnet("cnn", head, (28, 28, 1), 10, bn_momentum=0.9)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    model.fit(real_digits.x_train[:256], real_digits.y_train[:256], batch_size=64, epochs=1,
              verbose=0)
    return model


@pytest.mark.slow
def test_xnodr_converts_to_a_binary_conv_and_agrees_with_keras(real_digits):
    model = _briefly_trained("xnodr", real_digits)
    flatbuffer = lce.convert_lce(model)
    ops = lce.list_ops(flatbuffer)
    assert lce.binary_op_counts(flatbuffer) == {"LceBconv2d": 1, "LceQuantize": 1}
    # the binary conv is the projection: quantize right before it, no float conv of its size
    assert ops.index("LceQuantize") < ops.index("LceBconv2d")
    x = real_digits.x_test[:64]
    keras_scores = model.predict(x, verbose=0)
    lce_scores = lce.run_lce(flatbuffer, x)
    np.testing.assert_array_equal(lce_scores.argmax(-1), keras_scores.argmax(-1))
    np.testing.assert_allclose(lce_scores, keras_scores, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_xnidr_agreement_stays_float_in_lce(real_digits):
    """XnIDR multiplies two activations: nothing for LCE to pack into a binary kernel."""
    model = _briefly_trained("xnidr", real_digits)
    flatbuffer = lce.convert_lce(model)
    assert "LceBconv2d" not in lce.list_ops(flatbuffer)
    x = real_digits.x_test[:16]
    np.testing.assert_array_equal(lce.run_lce(flatbuffer, x).argmax(-1),
                                  model.predict(x, verbose=0).argmax(-1))


def test_list_ops_names_builtin_operators():
    x = tf.keras.Input((4,))
    model = tf.keras.Model(x, tf.keras.layers.Dense(2, activation="softmax")(x))
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    assert lce.list_ops(flatbuffer) == ["FULLY_CONNECTED", "SOFTMAX"]
    assert lce.binary_op_counts(flatbuffer) == {}


def test_convert_rejects_non_models():
    with pytest.raises(ValueError, match="expected a tf.keras.Model"):
        lce.convert_lce("model.keras")
