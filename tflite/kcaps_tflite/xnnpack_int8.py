"""Conversion-time forms of an int8 model that XNNPACK, LiteRT's default CPU engine, runs in int8.

Two places where the plain full-integer conversion of a capsule network falls out of XNNPACK's
fast int8 paths (op profiles at 1 thread, small_capsnet, in `docs/notes` of issue 6):

1. **The first convolution sees 1 input channel.** XNNPACK's int8 convolution kernels for x86
   (and most Arm ones) read the input channels in blocks of 8 (`...c8` micro-kernels) and pad a
   block that is not full, so a 5x5 convolution of a grayscale image does the work of 8 channels
   per tap: 135-175 us against 18 us for the float32 kernel, which has no such blocking.
   `space_to_depth_convolutions(model)` traces every such convolution (stride 1, "valid", odd
   kernel, 1-3 input channels) as SPACE_TO_DEPTH(2) -> CONV_2D -> DEPTH_TO_SPACE(2): the 2x2
   pixel blocks become 4x the channels, and the convolution computes the 4 output pixels of each
   block as 4x the filters, with the kernel scattered so that each of them sees exactly its own
   `k x k` window (the rest of the `(k+1) x (k+1)` block window is zero). Same outputs; in int8
   even the same integers: each new output channel holds one original filter plus zeros, so the
   per-channel weight scales, the bias and the calibrated output range are the original ones.
   The int8 kernel then runs 3-4x faster (44-52 us on the grayscale 5x5x32 convolution). Only
   int8 gets this form: in float32 the zeros are pure extra work.

2. **BATCH_MATMUL with a nonzero zero point on its second operand.** The converter quantizes
   the constant kernel W of the capsule projection (`kcaps.projections.DenseProjection`, one
   batched matmul over input capsules) and the routing's prediction vectors u_hat asymmetrically
   (min/max), and XNNPACK takes an int8 BATCH_MATMUL only with a zero point of 0 on that operand
   (`xnnpack_delegate.cc`, VisitBatchMatMulNode): the builtin kernel then ran the projection in
   75 us where XNNPACK's int8 GEMM takes 12 us. `symmetric_batch_matmul(model)` gives every such
   operand zero point 0: a constant is requantized symmetrically like the converter's own weights
   (scale max|w| / 127, values in [-127, 127]), an activation gets the symmetric scale covering
   its calibrated range (`max(|min|, max) / 127`) on the whole chain of RESHAPE / TRANSPOSE /
   EXPAND_DIMS / SQUEEZE views it passes through (those operators require equal parameters on
   both sides), and the operator that produces it requantizes to that scale. The cost is one
   weight rounding and a scale at most 2x coarser (1.07x for u_hat in small_capsnet).

Both keep builtin operators that TFLite Micro has (SPACE_TO_DEPTH, DEPTH_TO_SPACE, CONV_2D,
BATCH_MATMUL in int8), so the model still runs on a microcontroller.

>>> import numpy as np, tensorflow as tf
>>> from kcaps_tflite import xnnpack_int8
>>> image = tf.keras.Input((12, 12, 1))
>>> model = tf.keras.Model(image, tf.keras.layers.Conv2D(4, 5, activation="relu")(image))
>>> rewritten = xnnpack_int8.space_to_depth_convolutions(model)
>>> [type(layer).__name__ for layer in rewritten.layers]
['InputLayer', 'SpaceToDepthConv2D']
>>> x = np.random.rand(2, 12, 12, 1).astype("float32")
>>> bool(np.allclose(model(x), rewritten(x), atol=1e-5))
True
"""
import numpy as np

import kcaps  # noqa: F401  (first: puts Keras 2 behind tf.keras)
import tensorflow as tf  # noqa: I001
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from kcaps_tflite import files
from kcaps_tflite.flatbuffer_edit import int8_scale_zero

BLOCK = 2
MAX_INPUT_CHANNELS = 3  # 2x2 blocks of up to 3 channels: at most 12 channels, under 2 blocks of 8


@tf.keras.utils.register_keras_serializable(package="kcaps_tflite")
class SpaceToDepthConv2D(tf.keras.layers.Layer):
    """A stride-1 "valid" convolution computed on 2x2 pixel blocks (module doc, point 1).

    Built from the original `kernel` `(k, k, c, f)` (odd k) and `bias` `(f,)`.

    Input shape: `(batch, h, w, c)` with even h and w. Output shape: `(batch, h - k + 1,
    w - k + 1, f)`, the original convolution's.
    """

    def __init__(self, kernel_size, filters, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.filters = int(filters)
        self.activation = tf.keras.activations.get(activation)

    def build(self, input_shape):
        h, w, c = input_shape[1:]
        if h is None or w is None or h % BLOCK or w % BLOCK or self.kernel_size % 2 == 0:
            raise ValueError(f"{self.name}: needs even input height and width and an odd kernel, "
                             f"got input {tuple(input_shape)} and kernel {self.kernel_size}")
        blocks = (self.kernel_size + BLOCK) // BLOCK  # (k + 1) pixels: 2 phases of a k window
        self.kernel = self.add_weight(name="kernel", trainable=False,
                                      shape=(blocks, blocks, BLOCK * BLOCK * c,
                                             BLOCK * BLOCK * self.filters))
        self.bias = self.add_weight(name="bias", shape=(BLOCK * BLOCK * self.filters,),
                                    trainable=False)
        super().build(input_shape)

    @staticmethod
    def block_kernel(kernel):
        """`(k, k, c, f)` -> `(b, b, 4c, 4f)`: output channel `(ry, rx, f)` is output pixel
        `(2y + ry, 2x + rx)` of filter f; input channel `(cy, cx, c)` is SPACE_TO_DEPTH's order."""
        k, _, c, f = kernel.shape
        blocks = (k + BLOCK) // BLOCK
        out = np.zeros((blocks, BLOCK, blocks, BLOCK, c, BLOCK, BLOCK, f), kernel.dtype)
        for ry in range(BLOCK):
            for rx in range(BLOCK):
                padded = np.zeros((blocks * BLOCK, blocks * BLOCK, c, f), kernel.dtype)
                padded[ry:ry + k, rx:rx + k] = kernel
                out[:, :, :, :, :, ry, rx, :] = padded.reshape(blocks, BLOCK, blocks, BLOCK, c, f)
        out = out.transpose(0, 2, 1, 3, 4, 5, 6, 7)  # (by, bx, cy, cx, c, ry, rx, f)
        return out.reshape(blocks, blocks, BLOCK * BLOCK * c, BLOCK * BLOCK * f)

    def set_from(self, conv):
        kernel, bias = conv.get_weights() if conv.use_bias else (conv.get_weights()[0], None)
        bias = np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias
        self.set_weights([self.block_kernel(kernel), np.tile(bias, BLOCK * BLOCK)])

    def call(self, x):
        h = tf.nn.space_to_depth(x, BLOCK)
        h = tf.nn.conv2d(h, self.kernel, strides=1, padding="VALID") + self.bias
        return tf.nn.depth_to_space(self.activation(h), BLOCK)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, filters=self.filters,
                      activation=tf.keras.activations.serialize(self.activation))
        return config


def _rewritable(layer):
    if type(layer) is not tf.keras.layers.Conv2D:  # not larq's or tfmot's subclasses
        return False
    shape = layer.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        return False
    h, w, c = shape[1:]
    k = layer.kernel_size
    return (layer.data_format == "channels_last" and layer.strides == (1, 1)
            and layer.dilation_rate == (1, 1) and layer.padding == "valid" and layer.groups == 1
            and k[0] == k[1] and k[0] % 2 == 1 and c is not None and c <= MAX_INPUT_CHANNELS
            and h is not None and w is not None and h % BLOCK == 0 and w % BLOCK == 0)


def space_to_depth_convolutions(model):
    """`model` with its few-channel convolutions as `SpaceToDepthConv2D` (module doc, point 1).

    Every other layer is the same object (weights shared); returns `model` itself when no layer
    qualifies.
    """
    if not any(_rewritable(layer) for layer in model.layers):
        return model

    def clone(layer):
        if not _rewritable(layer):
            return layer
        new = SpaceToDepthConv2D(layer.kernel_size[0], layer.filters,
                                 activation=tf.keras.activations.serialize(layer.activation),
                                 name=layer.name)
        new.build(layer.input_shape)
        new.set_from(layer)
        return new

    return tf.keras.models.clone_model(model, clone_function=clone)


_VIEWS = {schema.BuiltinOperator.RESHAPE, schema.BuiltinOperator.TRANSPOSE,
          schema.BuiltinOperator.EXPAND_DIMS, schema.BuiltinOperator.SQUEEZE}


def symmetric_batch_matmul(model):
    """`model` (bytes) with zero point 0 on every int8 BATCH_MATMUL's second operand (module doc,
    point 2); the input bytes when there is nothing to change."""
    data, _ = files.model_bytes(model)
    obj = flatbuffer_utils.convert_bytearray_to_object(data)
    subgraph = obj.subgraphs[0]
    tensors = subgraph.tensors

    def builtin(op):
        return flatbuffer_utils.get_builtin_code_from_operator_code(obj.operatorCodes[op.opcodeIndex])

    # Tensors joined by view operators must keep equal quantization parameters.
    group = list(range(len(tensors)))

    def find(t):
        while group[t] != t:
            group[t] = group[group[t]]
            t = group[t]
        return t

    for op in subgraph.operators:
        if builtin(op) in _VIEWS:
            group[find(int(op.outputs[0]))] = find(int(op.inputs[0]))
    members = {}
    for t in range(len(tensors)):
        members.setdefault(find(t), []).append(t)
    io = {int(t) for t in list(subgraph.inputs) + list(subgraph.outputs)}

    changed = False
    for op in subgraph.operators:
        if builtin(op) != schema.BuiltinOperator.BATCH_MATMUL:
            continue
        rhs = int(op.inputs[1])
        tensor = tensors[rhs]
        params = int8_scale_zero(tensor)
        if params is None or params[1] == 0:
            continue
        scale, zero = params
        buffer = obj.buffers[tensor.buffer]
        if buffer.data is not None and len(buffer.data):  # a constant: requantize its values
            real = scale * (np.frombuffer(bytes(buffer.data), np.int8).astype(np.float64) - zero)
            new_scale = float(np.abs(real).max()) / 127 or scale
            values = np.clip(np.round(real / new_scale), -127, 127).astype(np.int8)
            buffer.data = np.frombuffer(values.tobytes(), np.uint8)
            tensor.quantization.scale, tensor.quantization.zeroPoint = [new_scale], [0]
            changed = True
            continue
        chain = members[find(rhs)]
        if io & set(chain) or not all(int8_scale_zero(tensors[t]) == params for t in chain):
            continue
        new_scale = max(scale * (128 + zero), scale * (127 - zero)) / 127
        for t in chain:
            tensors[t].quantization.scale, tensors[t].quantization.zeroPoint = [new_scale], [0]
        changed = True
    if not changed:
        return data
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
