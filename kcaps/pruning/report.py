"""What pruning did, measured: zeros per layer, 2:4 structure, parameters and FLOPs.

`sparsity_report` counts the zeros in each layer's prunable weights - the kernels that tfmot's
`prune_low_magnitude` masks (a kcaps layer's `get_prunable_weights()`, else the Keras kernel) -
of a model with or without tfmot's wrappers. Its `m_by_n` column says whether every group of 4
consecutive weights along the weight's *reduction axis* (column `axis`, in the stored layout)
holds at least 2 zeros; a last partial group (axis length not a multiple of 4) is padded with
zeros, as tfmot pads it. The reduction axis is the one tfmot groups along: a convolution's input
channels (axis 2 of `[h, w, cin, cout]`), a Dense layer's inputs (axis 0), and for a
`CapsuleDense` kernel `(num_in, input_dim, num_capsules, capsule_dim)` axis 1, `input_dim`, the
axis `u_hat = W u` sums over: kcaps hands tfmot that kernel as a `kcaps.prunable_view.
PermutedWeight` with `input_dim` moved where tfmot groups (without it, tfmot read the kernel as
a convolution and grouped across output capsules: 40% zeros with 10 class capsules).

`count_flops` asks TensorFlow's own profiler for the floating-point operations of one inference
(a multiply-add counts 2), routing included.

>>> import kcaps
>>> rows = sparsity_report(kcaps.models.small_capsnet())
>>> [(row["layer"], round(row["sparsity"], 4)) for row in rows][-1]   # a fresh kernel: dense
('class_capsules', 0.0)
"""
import numpy as np
import tensorflow as tf

from kcaps.models.capsule_model import unwrap

_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def prunable_weights(layer):
    """The weights tfmot prunes in `layer` (looking through tfmot's wrapper), as tfmot sees them."""
    layer = unwrap(layer)
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    return [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] in _KERNEL_NAMES]


def sparsity_report(model, m_by_n=(2, 4)):
    """One row per prunable weight: layer, weight, shape, axis, zeros, size, sparsity, m_by_n.

    Args:
      model: a Keras model, with or without tfmot's pruning wrappers.
      m_by_n: the (zeros, group) pattern to check along the reduction axis (module doc).
    Returns:
      A list of dicts (`shape` is the stored shape, `axis` the reduction axis in it);
      `summarize(rows)` gives the totals.
    """
    rows = []
    for layer in model.layers:
        for weight in prunable_weights(layer):
            stored = getattr(weight, "variable", weight)  # a PermutedWeight's variable
            values = stored.numpy()
            zeros = int(np.count_nonzero(values == 0))
            rows.append({
                "layer": unwrap(layer).name,
                "weight": stored.name.split("/")[-1].split(":")[0],
                "shape": tuple(values.shape),
                "axis": reduction_axis(weight),
                "zeros": zeros,
                "size": int(values.size),
                "sparsity": zeros / values.size if values.size else 0.0,
                "m_by_n": has_m_by_n(weight.numpy(), m_by_n),
            })
    return rows


# The axis tfmot's m-by-n groups run along, by weight rank, in the layout tfmot sees
# (`pruning_utils.weights_rearrange`: a convolution's input channels, a Dense layer's inputs).
_TFMOT_GROUP_AXIS = {4: 2, 2: 0}


def reduction_axis(weight):
    """The axis of the stored weight along which tfmot forms its m-by-n groups (None: rank not 2/4)."""
    axis = _TFMOT_GROUP_AXIS.get(len(weight.shape))
    perm = getattr(weight, "perm", None)
    return perm[axis] if perm is not None and axis is not None else axis


def summarize(rows):
    """Total zeros, size and sparsity over the rows of `sparsity_report`."""
    zeros = sum(row["zeros"] for row in rows)
    size = sum(row["size"] for row in rows)
    return {"zeros": zeros, "size": size, "sparsity": zeros / size if size else 0.0}


def has_m_by_n(values, m_by_n=(2, 4)):
    """Whether every group of n along tfmot's axis holds at least m zeros (None if rank not 2/4).

    `values` as tfmot sees them (a `PermutedWeight`'s `numpy()`). The groups are those of
    `tfmot...pruning_utils.weights_rearrange`: a rank-4 kernel is read as `[cout, h, w, cin]`
    rows grouped along `cin` (axis 2), a rank-2 one as `[out, in]` grouped along `in` (axis 0);
    a row's last group is padded with zeros.
    """
    zeros, n = m_by_n
    values = np.asarray(values)
    axis = _TFMOT_GROUP_AXIS.get(values.ndim)
    if axis is None:
        return None
    if values.size == 0:
        return True
    rows = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
    pad = (-rows.shape[1]) % n
    rows = np.pad(rows, [(0, 0), (0, pad)])
    nonzero = np.count_nonzero(rows.reshape(rows.shape[0], -1, n), axis=-1)
    return bool(np.all(nonzero <= n - zeros))


def count_flops(model, batch_size=1):
    """Floating-point operations of one inference of `batch_size` examples (TF's profiler)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    specs = [tf.TensorSpec([batch_size, *t.shape[1:]], t.dtype) for t in model.inputs]
    function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(*specs))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return int(profile.total_float_ops)
