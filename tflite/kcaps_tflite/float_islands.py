"""Run the few int8 operators TFLite Micro has no int8 kernel for in float, inside an int8 model.

The full-integer converter quantizes every operator that LiteRT has an int8 kernel for. TFLite
Micro lacks some of those kernels: SQRT, for one, exists there in float32 only. A kcaps model
calls SQRT once, on the squared lengths of the class capsules (`CapsuleLength`, 10 values), so
the int8 model would not run on a microcontroller.

`to_float(model, ops)` rewrites each such int8 operator `y = OP(x)` into
`y = QUANTIZE(OP_float(DEQUANTIZE(x)))` with x's and y's own quantization parameters: the
model keeps int8 inputs, outputs and every other operator, and the island computes in float what
the int8 kernel would have approximated. Both interpreters have DEQUANTIZE (int8 -> float32),
QUANTIZE (float32 -> int8) and the float kernels.

Why not an integer-only rewrite: `sqrt(x) = x * rsqrt(x)` uses int8 RSQRT, which TFLite Micro
has, but the int8 range of rsqrt(x) spans 1 to 1/sqrt(min x), so its step is far coarser than the
lengths near 1 that decide the class; on the real-digits split it cost 0.6 percentage point of
accuracy (98.0% against 98.6%), where the float island costs nothing measurable.
"""
import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from kcaps_tflite import files
from kcaps_tflite.flatbuffer_edit import new_operator

# Operators with an int8 kernel in LiteRT but only a float one in TFLite Micro (elementwise.cc,
# exp.cc) that kcaps models use: EXP is in Efficient-CapsNet's squash (`squash="efficient"`).
MICRO_FLOAT_ONLY = ("SQRT", "EXP")


def _float_copy(tensor, suffix):
    twin = copy.copy(tensor)
    twin.type = schema.TensorType.FLOAT32
    twin.quantization = None
    twin.buffer = 0  # activations point at the empty buffer 0
    twin.name = (tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name) + suffix
    return twin


def to_float(model, ops=MICRO_FLOAT_ONLY):
    """Return `model` (bytes) with every int8 operator named in `ops` computed in float.

    Returns the input unchanged when there is nothing to rewrite.
    """
    data, _ = files.model_bytes(model)
    obj = flatbuffer_utils.convert_bytearray_to_object(data)
    builtins = {getattr(schema.BuiltinOperator, name): name for name in ops}
    subgraph = obj.subgraphs[0]
    targets = [k for k, op in enumerate(subgraph.operators)
               if flatbuffer_utils.get_builtin_code_from_operator_code(
                   obj.operatorCodes[op.opcodeIndex]) in builtins
               and subgraph.tensors[op.inputs[0]].type == schema.TensorType.INT8]
    if not targets:
        return data
    rewritten = []
    for k, op in enumerate(subgraph.operators):
        if k not in targets:
            rewritten.append(op)
            continue
        x, y = int(op.inputs[0]), int(op.outputs[0])
        subgraph.tensors.append(_float_copy(subgraph.tensors[x], "/float"))
        x_float = len(subgraph.tensors) - 1
        subgraph.tensors.append(_float_copy(subgraph.tensors[y], "/float"))
        y_float = len(subgraph.tensors) - 1
        to_float_op = new_operator(obj, schema.BuiltinOperator.DEQUANTIZE, [x], [x_float])
        back_op = new_operator(obj, schema.BuiltinOperator.QUANTIZE, [y_float], [y])
        op.inputs = np.array([x_float] + [int(i) for i in op.inputs[1:]], np.int32)
        op.outputs = np.array([y_float], np.int32)
        obj.operatorCodes[op.opcodeIndex].version = 1  # the float kernel's version
        rewritten.extend([to_float_op, op, back_op])
    subgraph.operators = rewritten
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
