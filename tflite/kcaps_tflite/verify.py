"""Check a converted model in the LiteRT interpreter (`ai-edge-litert`) against its Keras model.

The converted model runs on a batch of real inputs; the check reports the top-1 agreement with
Keras (the fraction of inputs whose longest capsule is the same) and the largest difference of
capsule lengths. Agreement below a threshold raises `VerificationError`, and so does any output
that is not finite (NaN or Inf) from either model: the argmax of NaN scores is 0 everywhere, so a
model whose weights are NaN would otherwise "agree" 100% with its own NaN conversion.

Thresholds (`MIN_AGREEMENT`): float32 and float16 99%, dynamic-range 98%, int8 and binary 95%.
Float conversions change lengths by rounding only (about 1e-6 for float32, 1e-3 for float16), so
a flip needs two lengths closer than that; int8 rounds every activation to 1/255 of its range.
A well-trained small_capsnet keeps 99.7% of its top-1 on real digits in int8, but an
undertrained one (the quickstart after one epoch) has many near-ties between capsule lengths and
int8 flipped 3.6% of them, so the int8 threshold sits at 95%: a conversion that breaks numerics
(a wrong scale, a wrong layout) lands near chance, 10% for ten classes, far below either.

>>> import kcaps, numpy as np
>>> from kcaps_tflite import convert, verify
>>> model = kcaps.models.small_capsnet(conv_filters=(4, 8), capsule_types=2)
>>> x = np.random.rand(4, 28, 28, 1).astype("float32")
>>> report = verify.verify(model, convert.convert(model), x, precision="float32")
>>> report.agreement, report.max_length_difference < 1e-4
(1.0, True)
"""
import dataclasses

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from kcaps_tflite import files

MIN_AGREEMENT = {"float32": 0.99, "float16": 0.99, "dynamic": 0.98, "int8": 0.95, "binary": 0.95}


class VerificationError(ValueError):
    """The converted model disagrees with its Keras model more than the threshold allows."""


def load_interpreter(model, num_threads=None, use_xnnpack=True, source=None,
                     reference_kernels=False):
    """A LiteRT `Interpreter` for `.tflite` bytes or a path, errors naming the file.

    XNNPACK (LiteRT's default), TFLite's builtin kernels (`use_xnnpack=False`) or its reference
    kernels (`reference_kernels=True`).
    """
    data, source = files.model_bytes(model, source)
    resolver = OpResolverType.AUTO if use_xnnpack else \
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if reference_kernels:
        resolver = OpResolverType.BUILTIN_REF
    try:
        return Interpreter(model_content=data, num_threads=num_threads,
                           experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as error:
        raise files.TFLiteFileError(f"{source}: LiteRT cannot load the model: {error}") from None


def quantize(x, details):
    """Float inputs -> the input tensor's dtype (int8 models take `round(x / scale) + zero_point`)."""
    x = np.asarray(x, np.float32)
    if details["dtype"] in (np.int8, np.uint8):
        scale, zero_point = details["quantization"]
        info = np.iinfo(details["dtype"])
        return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(details["dtype"])
    return x.astype(details["dtype"])


def dequantize(y, details):
    """Output tensor values -> float32 (int8 outputs: `(q - zero_point) * scale`)."""
    if details["dtype"] in (np.int8, np.uint8):
        scale, zero_point = details["quantization"]
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def predict(model, x, batch_size=256, num_threads=None, use_xnnpack=True, source=None,
            reference_kernels=False):
    """Run a `.tflite` model (bytes or path) on float inputs `x`; return float32 outputs.

    Inputs are quantized and outputs dequantized with the model's own parameters, so an int8
    model is fed and read exactly as on a device. `use_xnnpack=False` runs TFLite's builtin
    kernels instead of LiteRT's default XNNPACK delegate, `reference_kernels=True` its reference
    kernels.
    """
    interpreter = load_interpreter(model, num_threads=num_threads, use_xnnpack=use_xnnpack,
                                   source=source, reference_kernels=reference_kernels)
    x = np.asarray(x, np.float32)
    index = interpreter.get_input_details()[0]["index"]
    outputs, allocated = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if allocated != len(chunk):
            interpreter.resize_tensor_input(index, [len(chunk), *x.shape[1:]])
            interpreter.allocate_tensors()
            allocated = len(chunk)
        interpreter.set_tensor(index, quantize(chunk, interpreter.get_input_details()[0]))
        interpreter.invoke()
        out = interpreter.get_output_details()[0]
        outputs.append(dequantize(interpreter.get_tensor(out["index"]), out))
    return np.concatenate(outputs)


@dataclasses.dataclass
class Verification:
    """The outcome of running a converted model next to its Keras model."""

    precision: str
    samples: int
    agreement: float  # fraction of inputs with the same top-1 class
    max_length_difference: float  # largest |length_tflite - length_keras|
    min_agreement: float
    accuracy: float | None = None  # of the converted model, when labels are given
    keras_accuracy: float | None = None

    @property
    def passed(self):
        return self.agreement >= self.min_agreement

    def as_dict(self):
        return dataclasses.asdict(self) | {"passed": self.passed}


def _check_finite(scores, precision, which):
    bad = int(np.size(scores) - np.count_nonzero(np.isfinite(scores)))
    if bad:
        raise VerificationError(
            f"{precision} verification failed: {bad} of {np.size(scores)} outputs of {which} are "
            f"not finite (NaN or Inf) on {len(scores)} inputs; NaN or Inf weights or inputs?")


def verify(keras_model, flatbuffer, x, y=None, precision="float32", min_agreement=None,
           keras_scores=None, tflite_scores=None):
    """Compare a converted model with its Keras model on real inputs `x` (labels `y` optional).

    Args:
      keras_model: the Keras model (or path) it was converted from; its inference graph is used.
      flatbuffer: the `.tflite` bytes or path.
      x: a batch of real inputs, float, shape `(n, *input_shape)`.
      y: optional integer labels, to report both accuracies.
      precision: sets the default threshold (`MIN_AGREEMENT`) and, for "binary", runs the model
        in Larq Compute Engine's interpreter instead of LiteRT.
      min_agreement: threshold overriding the default.
      keras_scores, tflite_scores: precomputed outputs, to skip running either model again.
    Returns:
      A `Verification`.
    Raises:
      VerificationError: an output of either model is NaN or Inf (the message names the
        precision and how many outputs), or top-1 agreement is below the threshold (the message
        gives both figures).
    """
    from kcaps_tflite import convert  # Keras side only when needed

    x = np.asarray(x, np.float32)
    if keras_scores is None:
        model = convert.inference_model(keras_model)
        keras_scores = model.predict(x, batch_size=256, verbose=0)
    if tflite_scores is None:
        if precision == "binary":
            from kcaps_tflite import lce

            tflite_scores = np.asarray(lce.run_lce(bytes(files.model_bytes(flatbuffer)[0]), x))
        else:
            tflite_scores = predict(flatbuffer, x)
    keras_scores = np.asarray(keras_scores, np.float32).reshape(len(x), -1)
    tflite_scores = np.asarray(tflite_scores, np.float32).reshape(len(x), -1)
    _check_finite(keras_scores, precision, "the Keras model")
    _check_finite(tflite_scores, precision, f"the {precision} model")
    keras_top1, tflite_top1 = keras_scores.argmax(-1), tflite_scores.argmax(-1)
    threshold = MIN_AGREEMENT.get(precision, 0.95) if min_agreement is None else min_agreement
    report = Verification(
        precision=precision, samples=len(x),
        agreement=float(np.mean(keras_top1 == tflite_top1)),
        max_length_difference=float(np.max(np.abs(keras_scores - tflite_scores))),
        min_agreement=float(threshold))
    if y is not None:
        y = np.asarray(y).reshape(-1)
        report.accuracy = float(np.mean(tflite_top1 == y))
        report.keras_accuracy = float(np.mean(keras_top1 == y))
    if not report.passed:
        raise VerificationError(
            f"{precision} conversion breaks numerics: top-1 agreement with Keras "
            f"{report.agreement:.2%} on {len(x)} inputs is below the {threshold:.0%} threshold "
            f"(max capsule-length difference {report.max_length_difference:.3g})")
    return report
