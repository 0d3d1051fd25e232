"""Conversion to TFLite in every precision, checked in the LiteRT interpreter against Keras."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import kcaps
from kcaps_tflite import convert, files, float_islands, graph, verify
from tflite_helpers import eval_images, flatbuffer, representative, trained_model, write

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("precision,max_difference", [
    ("float32", 1e-4), ("float16", 2e-2), ("dynamic", 0.1), ("int8", 0.25)])
def test_every_precision_runs_in_litert_and_matches_keras(precision, max_difference):
    x, y = eval_images()
    report = verify.verify(trained_model(), flatbuffer(precision), x, y, precision=precision)
    assert report.passed and report.samples == len(x)
    assert report.agreement >= verify.MIN_AGREEMENT[precision]
    assert report.max_length_difference <= max_difference
    assert abs(report.accuracy - report.keras_accuracy) <= 0.05


def test_float32_lengths_equal_keras_lengths():
    x, _ = eval_images(16)
    keras_lengths = convert.inference_model(trained_model()).predict(x, verbose=0)
    np.testing.assert_allclose(verify.predict(flatbuffer("float32"), x), keras_lengths, atol=1e-5)


def test_int8_model_is_integer_with_int8_io_and_only_the_sqrt_island_in_float():
    g = graph.read(flatbuffer("int8"))
    assert g.input_types == ("int8",) and g.output_types == ("int8",)
    assert not any(op.custom for op in g.operators)
    assert [op.name for op in g.float_operators()] == ["DEQUANTIZE", "SQRT", "QUANTIZE"]
    assert "WHILE" not in g.op_counts()  # routing unrolled: no control flow
    # The island reads and writes the int8 tensors the int8 SQRT used, so outputs are the same up
    # to the rounding of the int8 kernel.
    x, _ = eval_images(64)
    plain = flatbuffer("int8", micro_compatible=False)
    assert [op.name for op in graph.read(plain).float_operators()] == []
    island, integer = verify.predict(flatbuffer("int8"), x), verify.predict(plain, x)
    scale = verify.load_interpreter(plain).get_output_details()[0]["quantization"][0]
    assert np.max(np.abs(island - integer)) <= 2 * scale


def test_int8_is_four_times_smaller_and_float16_half():
    sizes = {p: len(flatbuffer(p)) for p in ("float32", "float16", "int8")}
    plain = len(flatbuffer("int8", xnnpack_forms=False))
    assert sizes["float32"] / plain > 3.0  # small model: fixed overhead counts
    # The XNNPACK forms add the first convolution's 2x2-block kernel: 4x the filters, 3x3 taps
    # of 4 channels instead of 5x5 of 1 (8 x 36 -> 32 x 36 bytes here), and their parameters.
    assert 0 < sizes["int8"] - plain < 3 * 1024
    assert 1.7 < sizes["float32"] / sizes["float16"] < 2.1


def test_decoder_and_label_input_are_dropped():
    model = trained_model()
    assert len(model.inputs) == 2  # image and label
    interpreter = verify.load_interpreter(flatbuffer("float32"))
    assert len(interpreter.get_input_details()) == 1
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 10]


def test_saved_keras_file_converts_like_the_model(tmp_path):
    path = tmp_path / "model.keras"
    trained_model().save(path)
    from_file = convert.convert(path, "float32")
    x, _ = eval_images(8)
    np.testing.assert_allclose(verify.predict(from_file, x),
                               verify.predict(flatbuffer("float32"), x), atol=1e-6)


def test_pruning_wrappers_are_stripped_and_sparsity_kept(tmp_path):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)

    def prune(layer):  # the layers with weights (CapsuleLength has none)
        if isinstance(layer, (tf.keras.layers.Conv2D, kcaps.layers.PrimaryCapsules,
                              kcaps.layers.CapsuleDense)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    base = kcaps.models.small_capsnet(conv_filters=(4, 8), capsule_types=2)
    pruned = tf.keras.models.clone_model(base, clone_function=prune)
    pruned.compile("adam", loss=kcaps.losses.MarginLoss())
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    pruned.fit(x, np.arange(16) % 10, epochs=2, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    assert any("prune_low_magnitude" in layer.name for layer in pruned.layers)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    stripped = convert.inference_model(path)
    assert not any("prune_low_magnitude" in layer.name for layer in stripped.layers)
    kernel = stripped.get_layer("class_capsules").kernel.numpy()
    assert np.mean(kernel == 0) >= 0.49
    tflite = convert.convert(path, "float32")
    report = verify.verify(stripped, tflite, x, precision="float32")
    assert report.agreement == 1.0 and report.max_length_difference < 1e-5


def test_int8_without_representative_data_is_refused():
    with pytest.raises(ValueError, match="needs representative_data"):
        convert.convert(trained_model(), "int8")


def test_representative_dataset_of_the_wrong_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"shape \(10, 32, 32, 3\).*\(batch, 28, 28, 1\)"):
        convert.convert(trained_model(), "int8", representative_data=np.zeros((10, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"shape \(28, 28, 1\)"):
        convert.convert(trained_model(), "int8", representative_data=np.zeros((28, 28, 1)))


def test_unknown_precision_and_missing_model_file(tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        convert.convert(trained_model(), "int4")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        convert.convert(tmp_path / "missing.keras")


def test_op_without_a_tflite_builtin_is_named():
    x = tf.keras.Input((8,))
    y = tf.keras.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1))(x)
    with pytest.raises(ValueError, match="builtin ops only failed.*Cumprod"):
        convert.convert(tf.keras.Model(x, y), "float32")


def test_a_conversion_that_breaks_numerics_fails_loudly():
    # The flatbuffer of another model: what a conversion with a wrong layout or scale looks like.
    other = kcaps.models.small_capsnet(conv_filters=(8, 16), capsule_types=4)
    x, _ = eval_images(60)
    with pytest.raises(verify.VerificationError, match=r"agreement with Keras .* below the 95%"):
        verify.verify(trained_model(), convert.convert(other, "float32"), x, precision="int8")


def test_float_islands_leave_a_model_without_int8_sqrt_unchanged():
    data = flatbuffer("float32")
    assert float_islands.to_float(data) == data


def test_missing_truncated_and_corrupt_tflite_files_are_named(tmp_path):
    x, _ = eval_images(2)
    with pytest.raises(FileNotFoundError, match="nothing.tflite"):
        verify.predict(tmp_path / "nothing.tflite", x)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(files.TFLiteFileError, match="corrupt.tflite.*not a TFLite model"):
        verify.predict(corrupt, x)
    truncated = write(tmp_path, "float32", "truncated.tflite")
    truncated.write_bytes(truncated.read_bytes()[:4000])
    with pytest.raises(files.TFLiteFileError, match="truncated.tflite"):
        verify.predict(truncated, x)
    with pytest.raises(files.TFLiteFileError, match="truncated.tflite"):
        graph.read(truncated)


def test_save_is_atomic(tmp_path):
    target = tmp_path / "model.tflite"
    with pytest.raises(files.TFLiteFileError):
        convert.save(b"garbage", target)
    assert list(tmp_path.iterdir()) == []
    convert.save(flatbuffer("float32"), target)
    assert target.read_bytes() == flatbuffer("float32")
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # no temporary left


def test_binary_larq_model_converts_with_lce_and_matches_keras():
    import larq

    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip", use_bias=False)
    image = tf.keras.Input((28, 28, 1))
    h = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    h = tf.keras.layers.BatchNormalization()(h)
    h = larq.layers.QuantConv2D(16, 3, strides=2, **binary)(h)
    h = tf.keras.layers.BatchNormalization()(h)
    capsules = kcaps.layers.PrimaryCapsules(2, 4, kernel_size=3, strides=2)(h)
    v = kcaps.layers.CapsuleDense(10, 8, routing="xnodr")(capsules)
    model = tf.keras.Model(image, kcaps.layers.CapsuleLength()(v))
    tflite = convert.convert(model, "binary")
    ops = graph.read(tflite).op_counts()
    # LCE 1-bit ops: the QuantConv2D and the XnODR projection (traced as a grouped binary conv)
    assert ops.get("LceBconv2d") == 2
    x, _ = eval_images(16)
    report = verify.verify(model, tflite, x, precision="binary")
    assert report.agreement == 1.0 and report.max_length_difference < 1e-4
