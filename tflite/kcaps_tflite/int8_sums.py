"""int8 SUM reductions as MEAN times the count: the same integers, computed alike by every runtime.

A capsule network sums in three places: the squared length `|s|^2` in every squash, the
weighted sum `s_j = sum_i c_ij u_hat_j|i` where the routing reduces over input capsules, and the
squared length read out as the class score. The full-integer converter writes each as an int8
SUM, and TFLite's runtimes do not agree on that operator:

- LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`) return a constant for an int8 SUM
  whose input and output scales differ (-1 for every element on small_capsnet's squared
  lengths), so the whole model falls to 10% accuracy there;
- LiteRT's optimized kernel and TFLite Micro round the same SUM differently (1-2 LSB on the
  squared lengths), which the three routing iterations grow into flipped near-ties.

Their int8 MEAN agrees bit for bit. An int8 SUM with output scale `s` gives exactly the integers
of a MEAN over the same axes whose output has scale `s / n` (n = the number of elements summed):
both are `round(sum_k (q_k - z_in) * s_in / s) + z_out`. `sums_as_means(model)` therefore writes
every int8 SUM as

    MEAN -> t' (scale s / n)  ->  MUL by the constant n (int8 1 at scale n)  ->  t (scale s)

The MUL's requantization multiplier is `(s / n) * n / s = 1`, so it hands the integers on
unchanged; the consumers of `t` see the tensor they saw before. Both operators are TFLite
builtins with int8 kernels in TFLite Micro and in XNNPACK (measured: no latency change on
small_capsnet at 1 thread). On small_capsnet's 2,000 real test digits TFLite Micro then agrees
with LiteRT's builtin kernels on every top-1 (99.75% before without the XNNPACK forms, 99.90%
with them), and LiteRT's reference kernels run the model at 99.30% instead of 10.35%
(docs/notes/issue6c.md). Output values still differ by rounding elsewhere, mostly in the
squash's int8 DIV, which TFLite Micro computes its own way.

Off by default: the new tensors and operators add about 1.2 KB, which would take small_capsnet's
int8 file from 3.50x to 3.48x smaller than float32. The microcontroller build
(`kcaps convert --for-micro`) turns it on.

>>> import numpy as np, tensorflow as tf
>>> from kcaps_tflite import convert, graph, int8_sums
>>> x = tf.keras.Input((4, 8))
>>> model = tf.keras.Model(x, tf.keras.layers.Lambda(
...     lambda t: tf.reduce_sum(t * t, axis=-1, keepdims=True))(x))
>>> data = np.random.rand(20, 4, 8).astype("float32")
>>> plain = convert.convert(model, "int8", representative_data=data, sums_as_means=False)
>>> ops = graph.read(int8_sums.sums_as_means(plain)).op_counts()
>>> "SUM" in ops, ops["MEAN"], ops["MUL"] >= 2
(False, 1, True)
"""
import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from kcaps_tflite import files
from kcaps_tflite.flatbuffer_edit import (add_tensor, builtin_code, int8_scale_zero, new_operator,
                                          opcode_index, shape_signature, tensor_shape)

# The op versions the converter writes for int8 MEAN and MUL (used only when the model has none).
_INT8_VERSION = 2


def _summed_count(obj, subgraph, op):
    """How many elements one output of this SUM adds up; None when the axes are not constant or
    a summed dimension is dynamic (its size is known only when the model runs)."""
    source, axes = (subgraph.tensors[int(i)] for i in op.inputs[:2])
    data = obj.buffers[axes.buffer].data
    if data is None or source.shape is None:
        return None
    shape, signature = tensor_shape(source), shape_signature(source)
    axes = {int(a) % len(shape) for a in np.frombuffer(bytes(data), np.int32)}
    if any(shape[a] <= 0 or signature[a] < 0 for a in axes):
        return None
    return int(np.prod([shape[a] for a in axes]))


def sums_as_means(model):
    """`model` (bytes or path) with every int8 SUM written as MEAN x count (module doc); the
    input bytes when there is none."""
    data, _ = files.model_bytes(model)
    obj = flatbuffer_utils.convert_bytearray_to_object(data)
    changed = False
    for subgraph in obj.subgraphs:
        operators, counts = [], {}
        for op in subgraph.operators:
            operators.append(op)
            if builtin_code(obj, op) != schema.BuiltinOperator.SUM:
                continue
            source = subgraph.tensors[int(op.inputs[0])]
            output = subgraph.tensors[int(op.outputs[0])]
            count = _summed_count(obj, subgraph, op)
            if not (int8_scale_zero(source) and int8_scale_zero(output) and count):
                continue
            mean = copy.deepcopy(output)
            # A short name without a layer path: the MEAN counts as its neighbours' layer.
            mean.name = b"mean%d" % len(subgraph.tensors)
            mean.quantization.scale = [float(output.quantization.scale[0]) / count]
            mean_index = add_tensor(obj, subgraph, mean)
            if count not in counts:  # one constant per count, shared by the MULs
                factor = schema.TensorT()
                factor.name = b"count_%d" % count
                factor.type = schema.TensorType.INT8
                factor.shape = np.array([1], np.int32)
                factor.quantization = schema.QuantizationParametersT()
                factor.quantization.scale, factor.quantization.zeroPoint = [float(count)], [0]
                counts[count] = add_tensor(obj, subgraph, factor, np.array([1], np.int8))

            output_index = int(op.outputs[0])
            # MEAN takes the SUM's inputs and ReducerOptions as they are.
            op.opcodeIndex = opcode_index(obj, schema.BuiltinOperator.MEAN, _INT8_VERSION)
            op.outputs = np.array([mean_index], np.int32)
            operators.append(new_operator(
                obj, schema.BuiltinOperator.MUL, [mean_index, counts[count]], [output_index],
                schema.BuiltinOptions.MulOptions, schema.MulOptionsT(), _INT8_VERSION))
            changed = True
        subgraph.operators = operators
    if not changed:
        return data
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
