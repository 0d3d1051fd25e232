"""Conversion-time forms of an int8 model that CMSIS-NN, TFLite Micro's Arm kernels, accelerates.

The microcontroller build writes every int8 SUM of a capsule network as MEAN times the count
(`kcaps_tflite.int8_sums`): the squash's squared lengths (a reduction over the 8 or 16 capsule
components) and the routing's first weighted sum (a reduction over the input capsules). TFLite
Micro has no CMSIS-NN MEAN, so these run on the reference kernel, which walks the tensor one
element at a time through a generic index loop: on small_capsnet under CMSIS-NN the routing's
MEAN was the largest capsule operator (9.7 % of the instructions on a Cortex-M4, 25.7 % on the
Cortex-M55; docs/notes/issue17.md). `means_as_fully_connected(model)` computes each such MEAN as
a FULLY_CONNECTED with one output unit and a constant all-ones int8 weight row, which CMSIS-NN
runs with its dot-product kernel (`arm_fully_connected_s8`). A reduction over an axis that is not
the last gets a TRANSPOSE (a CMSIS-NN kernel too) that moves the reduced axes last; when the MEAN's
input is itself a TRANSPOSE, the new one reads that TRANSPOSE's input with the two permutations
composed.

Same integers, not just the same values: TFLite Micro's int8 MEAN (`reduce_common.cc`,
`reference/reduce.h`) sums `q - z_in` over the `n` reduced elements into an int32, then
requantizes with `MultiplyByQuantizedMultiplier(sum, M', e')` where `(M, e) =
QuantizeMultiplier(s_in / s_out)` and `M' = (M << k) // n`, `e' = e - k`, `k = floor(log2 n)`
(clamped to 32 and 31 + e). Its FULLY_CONNECTED int8 (reference and CMSIS-NN) sums
`(q - z_in) * (w - 0)` (the same int32 when every `w` is 1), then requantizes with
`QuantizeMultiplier(float(s_in * s_w) / s_out)` and the same rounding, adds the output zero point
and clamps to int8 alike. So if the weight scale `s_w` makes that `QuantizeMultiplier` return
exactly `(M', e')`, every output integer is the MEAN's, for every input. `weight_scale` searches
the float32 values around `s_out * M' * 2**(e' - 31) / s_in` for one that does; for a power of
two `n`, `M' = M` and `s_w = 1 / n` (or 1 when the count MUL is folded, below) is exact. When
none exists the MEAN stays: `M'` below 2**30 (possible when `n` is not a power of two) is a
multiplier `QuantizeMultiplier` never returns, and TFLite's double rounding makes `(2 M', e' - 1)`
round differently on some sums.

The count MUL that `int8_sums` puts after the MEAN (`MEAN -> t' (s/n) -> MUL by n -> t (s)`)
hands the integers on unchanged; when the MEAN's only consumer is such a MUL whose
requantization is the identity on every int8 input (checked here with TFLite's arithmetic) and
whose output zero point is the MEAN's, the FULLY_CONNECTED writes `t` directly (weight scale
chosen against `t`'s scale) and the MUL goes too. An output shape that does not end in the one
unit in two dimensions gets a RESHAPE after the FULLY_CONNECTED (a copy of at most a few hundred
bytes).

Measured on small_capsnet's microcontroller build (`python -m benchmarks.firmware
--cmsis-nn-forms both`, docs/notes/issue17.md): all six MEANs rewritten; emulated instructions per
inference with CMSIS-NN 17.03 M -> 15.33 M on a Cortex-M4, 17.15 M -> 15.45 M on a Cortex-M7,
6.22 M -> 4.56 M on a Cortex-M55 (the routing's MEAN over 128 input capsules, 1.62 M, became a
TRANSPOSE and a FULLY_CONNECTED of 0.11 M), with the firmware's int8 outputs identical to those
before the rewrite; the model grows 2.8 KB, the code 7 KB, the arena 3 KB.

>>> import numpy as np, tensorflow as tf
>>> from kcaps_tflite import cmsis_nn_int8, convert, graph
>>> x = tf.keras.Input((4, 8))
>>> model = tf.keras.Model(x, tf.keras.layers.Lambda(
...     lambda t: tf.reduce_sum(t * t, axis=-1, keepdims=True))(x))
>>> data = np.random.default_rng(0).random((20, 4, 8)).astype("float32")
>>> micro = convert.convert(model, "int8", representative_data=data, xnnpack_forms=False,
...                         sums_as_means=True, cmsis_nn_forms=False)
>>> ops = graph.read(cmsis_nn_int8.means_as_fully_connected(micro)).op_counts()
>>> "MEAN" in ops, ops["FULLY_CONNECTED"]
(False, 1)
"""
import copy
import math

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from kcaps_tflite import files, int8_sums
from kcaps_tflite.flatbuffer_edit import (add_tensor, builtin_code, int8_scale_zero, new_operator,
                                          shape_signature, tensor_shape)

# The version the converter writes for an int8 FULLY_CONNECTED.
_FC_VERSION = 4
# How many float32 neighbours of the estimated weight scale `weight_scale` tries on each side.
SEARCH_ULPS = 512
INT32_MIN = -(1 << 31)


def quantize_multiplier(real):
    """TFLite's `QuantizeMultiplier(double)`: `(M, shift)` with `M` in [2**30, 2**31)."""
    if real == 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = int(math.floor(abs(fraction) * (1 << 31) + 0.5)) * (1 if fraction > 0 else -1)
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def mean_multiplier(input_scale, output_scale, count):
    """The `(multiplier, shift)` TFLite Micro's int8 MEAN of `count` elements requantizes with."""
    multiplier, shift = quantize_multiplier(
        float(np.float32(input_scale)) / float(np.float32(output_scale)))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << k) // count, shift - k


def fully_connected_multiplier(input_scale, weight_scale, output_scale):
    """The `(multiplier, shift)` of TFLite Micro's int8 FULLY_CONNECTED without bias (the input
    and weight scales multiply in float32, `GetQuantizedConvolutionMultipler`)."""
    product = np.float32(input_scale) * np.float32(weight_scale)
    return quantize_multiplier(float(product) / float(np.float32(output_scale)))


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's double-rounding `MultiplyByQuantizedMultiplier` on an int64 array of int32 values
    (`SaturatingRoundingDoublingHighMul` then `RoundingDivideByPOT`)."""
    x = np.asarray(x, np.int64) * (1 << max(shift, 0))
    right = max(-shift, 0)
    product = x * multiplier
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C division: toward zero
    high = np.where((x == INT32_MIN) & (multiplier == INT32_MIN), (1 << 31) - 1, high)
    mask = (1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def weight_scale(input_scale, output_scale, target):
    """A float32 weight scale that gives the all-ones FULLY_CONNECTED the requantization
    `target` (`(multiplier, shift)`), or None when no float32 near the estimate does."""
    multiplier, shift = target
    if not (1 << 30) <= multiplier < (1 << 31):
        return None  # QuantizeMultiplier never returns a multiplier below 2**30
    estimate = np.float32(float(np.float32(output_scale)) * multiplier * 2.0 ** (shift - 31)
                          / float(np.float32(input_scale)))
    up = down = estimate
    for _ in range(SEARCH_ULPS):
        for candidate in (up, down):
            if fully_connected_multiplier(input_scale, candidate, output_scale) == target:
                return float(candidate)
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(0))
    return None


def _constant(obj, tensor, dtype):
    data = obj.buffers[tensor.buffer].data
    return None if data is None else np.frombuffer(bytes(data), dtype)


def _identity_count_mul(obj, subgraph, op, mean_index, mean_scale=None):
    """Whether MUL `op` of the MEAN's output by a constant hands every int8 value on unchanged
    (`int8_sums`' count MUL): same zero point, requantization the identity on [-128, 127] (with
    the MEAN's output at `mean_scale` when given)."""
    if builtin_code(obj, op) != schema.BuiltinOperator.MUL or len(op.inputs) != 2:
        return False
    options = op.builtinOptions
    if options is not None and getattr(options, "fusedActivationFunction", 0):
        return False
    other = [int(i) for i in op.inputs if int(i) != mean_index]
    if len(other) != 1:
        return False
    mean, factor = subgraph.tensors[mean_index], subgraph.tensors[other[0]]
    output = subgraph.tensors[int(op.outputs[0])]
    value = _constant(obj, factor, np.int8)
    params = [int8_scale_zero(t) for t in (mean, factor, output)]
    if value is None or value.size != 1 or None in params:
        return False
    (s_mean, z_mean), (s_factor, z_factor), (s_out, z_out) = params
    if z_out != z_mean or tensor_shape(output) != tensor_shape(mean):
        return False
    s_mean = s_mean if mean_scale is None else mean_scale
    multiplier, shift = quantize_multiplier(s_mean * s_factor / s_out)
    x = np.arange(-128 - z_mean, 128 - z_mean)
    return bool(np.array_equal(
        multiply_by_quantized_multiplier(x * (int(value[0]) - z_factor), multiplier, shift), x))


def _rescaled_mean(obj, subgraph, mul, mean_index, input_scale, target):
    """`(output scale, weight scale)` for a FULLY_CONNECTED that writes the MEAN's output at a
    float32 scale near its own, so that the FULLY_CONNECTED's requantization is `target` while the
    count MUL stays the identity; None when no scale within `SEARCH_ULPS * 8` float32 steps does.
    (Two free scales reach a 31-bit multiplier that one float32 scale reaches about once in 128.)"""
    multiplier, shift = target
    if not (1 << 30) <= multiplier < (1 << 31):
        return None
    up = down = np.float32(int8_scale_zero(subgraph.tensors[mean_index])[0])
    for _ in range(SEARCH_ULPS * 8):
        for output_scale in (up, down):
            estimate = np.float32(float(output_scale) * multiplier * 2.0 ** (shift - 31)
                                  / float(np.float32(input_scale)))
            for weight in (estimate, np.nextafter(estimate, np.float32(0)),
                           np.nextafter(estimate, np.float32(np.inf))):
                if (fully_connected_multiplier(input_scale, weight, output_scale) == target
                        and _identity_count_mul(obj, subgraph, mul, mean_index,
                                                float(output_scale))):
                    return float(output_scale), float(weight)
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(0))
    return None


def _uses(subgraph):
    uses = {}
    for k, op in enumerate(subgraph.operators):
        for i in op.inputs:
            uses.setdefault(int(i), []).append(k)
    return uses


def _new_tensor(obj, subgraph, like, name, shape, signature):
    tensor = copy.deepcopy(like)
    tensor.name = name
    tensor.shape = np.array(shape, np.int32)
    tensor.shapeSignature = None if signature == shape else np.array(signature, np.int32)
    return add_tensor(obj, subgraph, tensor)


def _int32_constant(obj, subgraph, name, values):
    tensor = schema.TensorT()
    tensor.name = name
    tensor.type = schema.TensorType.INT32
    tensor.shape = np.array([len(values)], np.int32)
    return add_tensor(obj, subgraph, tensor, np.array(values, np.int32))


def _rewrite(obj, subgraph, index, uses, producers, outputs, notes):
    """The operators that replace MEAN `index` (and the indices of operators they make
    redundant), or None when it stays; `notes` gets the reason."""
    op = subgraph.operators[index]
    source_index, mean_index = int(op.inputs[0]), int(op.outputs[0])
    source, mean = subgraph.tensors[source_index], subgraph.tensors[mean_index]
    axes = _constant(obj, subgraph.tensors[int(op.inputs[1])], np.int32)
    shape, signature = tensor_shape(source), shape_signature(source)
    source_params, mean_params = int8_scale_zero(source), int8_scale_zero(mean)
    if source_params is None or mean_params is None or axes is None or shape is None:
        return None
    reduced = sorted({int(a) % len(shape) for a in axes.ravel()})
    count = int8_sums._summed_count(obj, subgraph, op)  # MEAN and SUM: (input, axes)
    if count is None:
        return None  # a reduced dimension known only when the model runs
    kept = [a for a in range(len(shape)) if a not in reduced]
    input_scale = source_params[0]
    target = mean_multiplier(input_scale, mean_params[0], count)

    # The tensor the FULLY_CONNECTED writes: the count MUL's output when that MUL is the identity,
    # else the MEAN's own output (at a nearby scale if the count MUL stays the identity there).
    written, removed, scale = mean_index, [], None
    consumers = uses.get(mean_index, [])
    mul = subgraph.operators[consumers[0]] if len(consumers) == 1 else None
    count_mul = (mul is not None and mean_index not in outputs
                 and _identity_count_mul(obj, subgraph, mul, mean_index))
    if count_mul:
        written = int(mul.outputs[0])
        scale = weight_scale(input_scale, int8_scale_zero(subgraph.tensors[written])[0], target)
        if scale is not None:
            removed = [consumers[0]]
        else:
            written = mean_index
            found = _rescaled_mean(obj, subgraph, mul, mean_index, input_scale, target)
            if found is not None:
                mean.quantization.scale = [found[0]]
                scale = found[1]
    else:
        scale = weight_scale(input_scale, mean_params[0], target)
    if scale is None:
        notes.append(f"MEAN {mean.name.decode()}: multiplier {target} has no all-ones "
                     f"FULLY_CONNECTED weight scale (count {count})")
        return None
    output = subgraph.tensors[written]
    name = output.name.decode().split(";")[0]
    replacement = []

    # Reduced axes last: a TRANSPOSE (composed with the producer's when that is one).
    fc_input = source_index
    permutation = kept + reduced
    if permutation != list(range(len(shape))):
        feed, perm = source_index, np.array(permutation)
        producer = producers.get(source_index)
        if producer is not None and builtin_code(obj, producer) == schema.BuiltinOperator.TRANSPOSE:
            first = _constant(obj, subgraph.tensors[int(producer.inputs[1])], np.int32)
            if first is not None:
                feed, perm = int(producer.inputs[0]), first[perm]
        fc_input = _new_tensor(obj, subgraph, source, f"{name}/transposed".encode(),
                               [shape[a] for a in permutation],
                               [signature[a] for a in permutation])
        replacement.append(new_operator(
            obj, schema.BuiltinOperator.TRANSPOSE,
            [feed, _int32_constant(obj, subgraph, f"{name}/perm".encode(), perm.tolist())],
            [fc_input], schema.BuiltinOptions.TransposeOptions, schema.TransposeOptionsT()))

    weights = schema.TensorT()
    weights.name = f"{name}/ones".encode()
    weights.type = schema.TensorType.INT8
    weights.shape = np.array([1, count], np.int32)
    weights.quantization = schema.QuantizationParametersT()
    weights.quantization.scale, weights.quantization.zeroPoint = [scale], [0]
    weights_index = add_tensor(obj, subgraph, weights, np.ones(count, np.int8))

    # A 2-D output [rows, 1]: CMSIS-NN then runs `arm_fully_connected_s8`. (With more dimensions
    # and a count that is a multiple of 4 it would take `arm_convolve_1x1_s8_fast`, whose TFLite
    # Micro wrapper checks `TFLITE_DCHECK_GE(buffer_conv_1x1_idx, 4)` and aborts when fewer than
    # four scratch buffers were requested before it, as in small_capsnet.)
    rows = int(np.prod([shape[a] for a in kept]))
    fc_shape = [rows, 1]
    fc_output = written
    if tensor_shape(output) != fc_shape:
        dynamic = any(signature[a] < 0 for a in kept)
        fc_output = _new_tensor(obj, subgraph, output, f"{name}/sum".encode(), fc_shape,
                                [-1 if dynamic else rows, 1])
    options = schema.FullyConnectedOptionsT()
    replacement.append(new_operator(
        obj, schema.BuiltinOperator.FULLY_CONNECTED, [fc_input, weights_index, -1], [fc_output],
        schema.BuiltinOptions.FullyConnectedOptions, options, _FC_VERSION))
    if fc_output != written:
        new_shape = shape_signature(output)  # -1 for a dynamic batch, which RESHAPE infers
        if sum(d < 0 for d in new_shape) > 1:
            new_shape = tensor_shape(output)
        shape_index = _int32_constant(obj, subgraph, f"{name}/shape".encode(), new_shape)
        reshape = schema.ReshapeOptionsT()
        reshape.newShape = np.array(new_shape, np.int32)
        replacement.append(new_operator(obj, schema.BuiltinOperator.RESHAPE, [fc_output, shape_index],
                                     [written], schema.BuiltinOptions.ReshapeOptions, reshape))
    return replacement, removed


def means_as_fully_connected(model, notes=None):
    """`model` (bytes or path) with every int8 MEAN that can keep its integers computed as an
    all-ones FULLY_CONNECTED (module doc); the input bytes when none can. `notes`, a list, gets
    one line per MEAN left as it was and why."""
    data, _ = files.model_bytes(model)
    obj = flatbuffer_utils.convert_bytearray_to_object(data)
    notes = [] if notes is None else notes
    changed = False
    for subgraph in obj.subgraphs:
        uses = _uses(subgraph)
        producers = {int(o): op for op in subgraph.operators for o in op.outputs}
        outputs = {int(i) for i in subgraph.outputs}
        replaced, dropped = {}, set()
        for k, op in enumerate(subgraph.operators):
            if builtin_code(obj, op) != schema.BuiltinOperator.MEAN or k in dropped:
                continue
            result = _rewrite(obj, subgraph, k, uses, producers, outputs, notes)
            if result is not None:
                replaced[k], removed = result
                dropped.update(removed)
        if replaced:
            changed = True
            operators = []
            for k, op in enumerate(subgraph.operators):
                if k not in dropped:
                    operators.extend(replaced.get(k, [op]))
            subgraph.operators = operators
    if not changed:
        return data
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
