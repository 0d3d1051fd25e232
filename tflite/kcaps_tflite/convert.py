"""Keras model (or saved file) -> `.tflite` bytes in float32, float16, dynamic-range int8,
full-integer int8, or binary (Larq Compute Engine).

What is converted is the inference graph: image -> capsule lengths. Pruning wrappers are stripped
(`tfmot.sparsity.keras.strip_pruning`), and a capsule model's label input and reconstruction
decoder are dropped (`kcaps.models.classifier`). The routing loop is unrolled at trace time, so
the graph has no control flow.

Precisions:

| name      | weights | activations | inputs/outputs | converter settings                          |
|-----------|---------|-------------|----------------|---------------------------------------------|
| `float32` | float32 | float32     | float32        | builtin ops only                            |
| `float16` | float16 | float32     | float32        | `supported_types=[tf.float16]`              |
| `dynamic` | int8    | float32 (int8 matmuls where the kernel quantizes on the fly) | float32 | `Optimize.DEFAULT`, no data |
| `int8`    | int8    | int8        | int8           | representative dataset, `TFLITE_BUILTINS_INT8` |
| `binary`  | 1 bit (larq layers) | float32 | float32 | `kcaps_tflite.lce.convert_lce` (LCE custom ops) |

Every precision but `binary` uses builtin ops only (never SELECT_TF_OPS), so the file runs in any
LiteRT build, on Android, and for `int8` in TFLite Micro: the int8 model computes the few
operators TFLite Micro has no int8 kernel for (SQRT of the 10 squared capsule lengths) in float
between a DEQUANTIZE and a QUANTIZE (`kcaps_tflite.float_islands`). Two more int8 rewrites keep
the integers and change how runtimes compute them: the forms XNNPACK runs in int8
(`kcaps_tflite.xnnpack_int8`, on by default) and every SUM as MEAN times the count, which
LiteRT's reference kernels, its builtin kernels and TFLite Micro compute alike
(`kcaps_tflite.int8_sums`, off by default), and in the microcontroller build each such MEAN as
an all-ones FULLY_CONNECTED, which CMSIS-NN accelerates (`kcaps_tflite.cmsis_nn_int8`).

>>> import kcaps, numpy as np
>>> from kcaps_tflite import convert
>>> model = kcaps.models.small_capsnet(conv_filters=(4, 8), capsule_types=2)
>>> flatbuffer = convert.convert(model, "int8", representative_data=np.random.rand(8, 28, 28, 1))
>>> flatbuffer[4:8]
b'TFL3'
"""
import os
import pathlib

import numpy as np

import kcaps  # noqa: F401,I001  (first: it puts Keras 2 behind tf.keras; registers kcaps layers)
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from kcaps.models import capsule_model
from kcaps_tflite import cmsis_nn_int8, files, float_islands, int8_sums, xnnpack_int8

PRECISIONS = ("float32", "float16", "dynamic", "int8", "binary")
DEFAULT_CALIBRATION_SAMPLES = 200
# `convert` options of the int8 build for a microcontroller (`kcaps convert --for-micro`).
MICRO_BUILD = {"xnnpack_forms": False, "sums_as_means": True, "cmsis_nn_forms": True}


def load_model(path):
    """Load a saved Keras model (`.keras`, `.h5` or a SavedModel directory), pruned or not."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Keras model not found: {path}")
    try:
        with tfmot.sparsity.keras.prune_scope():  # so pruning wrappers deserialize
            return tf.keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot load a Keras model from it ({error})") from None


def _is_pruned(model):
    """Whether any layer is wrapped (tfmot's pruning wrapper is a `tf.keras.layers.Wrapper`)."""
    return any(capsule_model.unwrap(layer) is not layer for layer in model.submodules)


def inference_model(model):
    """The image -> scores graph to convert: pruning wrappers stripped, decoder and label dropped.

    Accepts a Keras model or a path to a saved one.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"expected a Keras model or a path to one, got {type(model).__name__}")
    if _is_pruned(model):
        model = tfmot.sparsity.keras.strip_pruning(model)
    if capsule_model.LABEL_INPUT in model.input_names or (
            capsule_model.LENGTHS in model.output_names and len(model.outputs) > 1):
        model = capsule_model.classifier(model)
    if len(model.inputs) != 1:
        raise ValueError(f"{model.name}: conversion needs one image input, got {model.input_names}")
    return model


def check_representative_data(data, model):
    """`data` as a float32 array of model inputs; ValueError naming both shapes if they differ."""
    expected = tuple(model.inputs[0].shape[1:])
    array = np.asarray(data)
    if array.ndim != len(expected) + 1 or any(
            e is not None and a != e for a, e in zip(array.shape[1:], expected)):
        raise ValueError(
            f"representative dataset has shape {array.shape}, but {model.name} takes inputs of "
            f"shape (batch, {', '.join(str(d) for d in expected)}); give images of the "
            f"training data, e.g. x_train[:{DEFAULT_CALIBRATION_SAMPLES}]")
    if len(array) == 0:
        raise ValueError("representative dataset is empty")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"representative dataset must be numeric, got dtype {array.dtype}")
    return array.astype(np.float32)


def calibration_sample(x, count=DEFAULT_CALIBRATION_SAMPLES, seed=0):
    """`count` images of `x` (seeded, without replacement) to calibrate int8 with; all if fewer.

    Give it the training split: calibration sets the int8 ranges, so it must not see the images
    the conversion is verified on.
    """
    x = np.asarray(x)
    if count >= len(x):
        return x
    return x[np.random.default_rng(seed).choice(len(x), count, replace=False)]


def _converter(model, precision, representative_data):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        samples = check_representative_data(representative_data, model)

        def representative_dataset():
            for x in samples:
                yield [x[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def convert(model, precision="float32", representative_data=None, micro_compatible=True,
            xnnpack_forms=True, sums_as_means=False, cmsis_nn_forms=False):
    """Convert a Keras model (or the path of a saved one) to `.tflite` bytes.

    Args:
      model: a `tf.keras.Model` or a path to a `.keras` / `.h5` file or SavedModel directory.
      precision: one of `PRECISIONS` (table in the module doc).
      representative_data: for `int8`, an array of model inputs drawn from the training data,
        shape `(n, *input_shape)`; every image is one calibration step (about 200 are plenty).
      micro_compatible: for `int8`, compute in float the operators TFLite Micro has no int8
        kernel for (see `kcaps_tflite.float_islands`).
      xnnpack_forms: for `int8`, trace few-channel convolutions on 2x2 pixel blocks and give
        BATCH_MATMUL operands zero point 0, the forms XNNPACK runs in int8
        (`kcaps_tflite.xnnpack_int8`); False gives the plain converter output.
      sums_as_means: for `int8`, write every SUM as MEAN times the count: the same integers,
        which TFLite Micro and LiteRT's builtin and reference kernels compute alike
        (`kcaps_tflite.int8_sums`; off by default: it adds about 1.2 KB). A microcontroller
        build takes `MICRO_BUILD`: no XNNPACK forms, SUMs as MEANs, CMSIS-NN forms
        (`kcaps convert --for-micro`).
      cmsis_nn_forms: for `int8`, compute every MEAN that keeps its integers as an all-ones
        FULLY_CONNECTED, which TFLite Micro's CMSIS-NN kernels accelerate
        (`kcaps_tflite.cmsis_nn_int8`; off by default, on in `MICRO_BUILD`).
    Returns:
      The flatbuffer as bytes.
    Raises:
      ValueError: unknown precision, missing or wrongly shaped representative data, or ops that
        have no TFLite builtin (their names are in the message).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    model = inference_model(model)
    if precision == "binary":
        from kcaps_tflite import lce  # larq-compute-engine is optional: import only when asked

        return files.check_tflite_bytes(lce.convert_lce(model), "LCE converter output")
    if precision == "int8" and representative_data is None:
        raise ValueError("precision 'int8' needs representative_data: model inputs drawn from "
                         "the training data, shape (n, *input_shape)")
    if precision == "int8" and xnnpack_forms:
        model = xnnpack_int8.space_to_depth_convolutions(model)
    converter = _converter(model, precision, representative_data)
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # ConverterError: the message lists the unsupported ops
        if type(error).__name__ != "ConverterError":
            raise
        raise ValueError(f"{model.name}: {precision} conversion with builtin ops only failed: "
                         f"{error}") from None
    if precision == "int8" and xnnpack_forms:
        flatbuffer = xnnpack_int8.symmetric_batch_matmul(flatbuffer)
    if precision == "int8" and sums_as_means:
        flatbuffer = int8_sums.sums_as_means(flatbuffer)
    if precision == "int8" and cmsis_nn_forms:
        flatbuffer = cmsis_nn_int8.means_as_fully_connected(flatbuffer)
    if precision == "int8" and micro_compatible:
        flatbuffer = float_islands.to_float(flatbuffer)
    return files.check_tflite_bytes(flatbuffer, f"{precision} converter output")


def save(flatbuffer, path):
    """Write `.tflite` bytes to `path` atomically; return the path."""
    return files.write_bytes(path, files.check_tflite_bytes(flatbuffer, str(path)))
