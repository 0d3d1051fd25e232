"""Small edits of a `.tflite` flatbuffer in its object form (`flatbuffer_utils`), shared by the
conversion-time rewrites (`float_islands`, `int8_sums`, `xnnpack_int8`, `cmsis_nn_int8`)."""
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils


def builtin_code(obj, op):
    """The builtin operator code of `op` in model object `obj`."""
    return flatbuffer_utils.get_builtin_code_from_operator_code(obj.operatorCodes[op.opcodeIndex])


def int8_scale_zero(tensor):
    """`(scale, zero_point)` of a per-tensor quantized int8 tensor; None for any other tensor
    (another type, no quantization, or per-channel)."""
    q = tensor.quantization
    if (tensor.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1
            or q.zeroPoint is None or len(q.zeroPoint) != 1):
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def opcode_index(obj, builtin, version=1):
    """Index of `builtin` in the model's operator codes, added (with `version`) when missing."""
    for k, code in enumerate(obj.operatorCodes):
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == builtin:
            return k
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin,
                                     schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    obj.operatorCodes.append(code)
    return len(obj.operatorCodes) - 1


def new_operator(obj, builtin, inputs, outputs, options_type=0, options=None, version=1):
    """A new `builtin` operator (its operator code added with `version` when missing)."""
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(obj, builtin, version)
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array(outputs, np.int32)
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    return op


def tensor_shape(tensor):
    """The tensor's shape as a list of ints (None when it has none)."""
    return None if tensor.shape is None else [int(d) for d in tensor.shape]


def shape_signature(tensor):
    """The shape with -1 where a dimension is dynamic (the batch, as the converter writes it)."""
    if tensor.shapeSignature is None:
        return tensor_shape(tensor)
    return [int(d) for d in tensor.shapeSignature]


def add_tensor(obj, subgraph, tensor, data=None):
    """Append `tensor` to `subgraph`; with `data` (an array) as a constant in a buffer of its own,
    otherwise as an activation on the empty buffer 0. Returns the tensor's index."""
    if data is None:
        tensor.buffer = 0
    else:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        obj.buffers.append(buffer)
        tensor.buffer = len(obj.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1
