"""Larq Compute Engine (LCE): binarized kcaps models as TFLite flatbuffers with binary ops.

    flatbuffer = convert_lce(model)                   # bytes
    list_ops(flatbuffer)                               # [..., "LceQuantize", "LceBconv2d", ...]
    scores = run_lce(flatbuffer, images)               # in LCE's interpreter

LCE (`pip install larq-compute-engine==0.16.0`, kcaps' `lce` extra) replaces binarized
convolutions by `LceBconv2d`: bit-packed +-1 filters and XNOR-popcount products, with a following
per-channel multiply folded in. It binarizes convolutions only, and grouped ones only with a
multiple of 32 input channels per group. So:

- XnODR's projection (`kcaps.projections.XnorProjection`) is traced inside
  `kcaps.projections.binary_conv_scope()`, as one grouped 1x1 binary convolution with a group of
  32 channels per input capsule (its 8 channels, padded with constant inputs whose +-1 weights
  cancel exactly). LCE makes it one `LceQuantize` + one `LceBconv2d` with XnODR's alpha folded in;
  the result equals the Keras layer's (same integer counts, then the same float scaling). On
  disk each 8-D capsule's filter is padded to a 32-bit word: 4 bits per binary weight instead
  of 1, still 8x less than float32 (plus alpha, one float per output channel).
- XnIDR binarizes the agreement `sign(u_hat) . sign(v)`: a product of two activations, with no
  constant weights for LCE to pack into a binary kernel. LCE cannot binarize it; it stays float
  ops (signs, a batched matmul) in the converted file.
- LCE's binary ops are custom ops: the file runs in LCE's interpreter (`run_lce`), not in plain
  LiteRT or TFLite Micro. LCE's kernels are written for Arm; on x86 its interpreter is much
  slower than its Arm figures (measure there before drawing conclusions).

>>> import kcaps
>>> from kcaps_tflite import lce
>>> model = kcaps.models.backbone_capsnet("cnn", "xnodr", input_shape=(12, 12, 1))
>>> flatbuffer = lce.convert_lce(model)
>>> lce.binary_op_counts(flatbuffer)
{'LceBconv2d': 1, 'LceQuantize': 1}
"""
import collections

import numpy as np

import kcaps  # noqa: F401,I001  (first: it puts Keras 2 behind tf.keras; registers kcaps layers)
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from kcaps.models import capsule_model

BINARY_OPS = ("LceBconv2d", "LceBMaxPool2d", "LceQuantize", "LceDequantize")


def _lce():
    try:
        import larq_compute_engine
    except ImportError as error:
        raise ImportError(
            "Binary (Larq Compute Engine) conversion needs larq-compute-engine: "
            "pip install larq-compute-engine==0.16.0 (kcaps' `lce` extra)") from error
    return larq_compute_engine


def convert_lce(model):
    """Convert a Keras model to an LCE flatbuffer (bytes), binarizing what LCE can.

    A capsule model's label input and decoder are dropped (`kcaps.models.classifier`) and
    pruning wrappers are stripped first. XnODR projections are traced as grouped binary
    convolutions (`kcaps.projections.binary_conv_scope`).
    """
    lce = _lce()
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"convert_lce: expected a tf.keras.Model, got {type(model).__name__}")
    model = capsule_model.classifier(tfmot.sparsity.keras.strip_pruning(model))
    with kcaps.projections.binary_conv_scope():
        return bytes(lce.convert_keras_model(model))


def list_ops(flatbuffer):
    """Operator names of a flatbuffer's main graph, in execution order.

    Builtin operators by their TFLite name (`"CONV_2D"`), custom ones by their code
    (`"LceBconv2d"`).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytes(flatbuffer), 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    ops = []
    for operator in model.subgraphs[0].operators:
        code = model.operatorCodes[operator.opcodeIndex]
        if code.customCode:
            ops.append(code.customCode.decode())
        else:  # deprecated_builtin_code holds codes < 127 in older files
            ops.append(names[max(code.builtinCode, code.deprecatedBuiltinCode)])
    return ops


def binary_op_counts(flatbuffer):
    """`{op: count}` of LCE's binary operators in a flatbuffer (empty if none)."""
    counts = collections.Counter(op for op in list_ops(flatbuffer) if op in BINARY_OPS)
    return dict(sorted(counts.items()))


def interpreter(flatbuffer, num_threads=1):
    """LCE's interpreter for a flatbuffer.

    Uses LCE's indirect-BGEMM binary kernel: its default optimized kernel refuses grouped binary
    convolutions (XnODR's), the indirect one runs them and ordinary ones alike.
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    _lce()
    return Interpreter(bytes(flatbuffer), num_threads=num_threads, use_indirect_bgemm=True)


def run_lce(flatbuffer, x, num_threads=1):
    """Outputs of an LCE flatbuffer for a batch `x` (run one example at a time), as an array."""
    return np.asarray(interpreter(flatbuffer, num_threads).predict(np.asarray(x, np.float32)))

