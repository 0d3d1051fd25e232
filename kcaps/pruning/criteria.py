"""How important each unit (channel, capsule type, capsule) is: the scores that pruning ranks.

- `"l1"`: the L1 norm of the unit's filter (Li et al., "Pruning Filters for Efficient ConvNets",
  2017; the ranking behind the EagleEye backbones of Renzulli and Grangetto). For a capsule type:
  the L1 norm of its `capsule_dim` filters; for an output capsule of a `CapsuleDense`: of its
  matrices `W[:, :, j, :]`. Needs no data.
- `"chip"`: channel independence (Sui et al., "CHIP", NeurIPS 2021), the criterion Sahu and
  Altahhan build on. For each image, the unit outputs form a matrix A (units x columns); the
  score of unit c is `||A||_* - ||A with row c zeroed||_*` (nuclear norms), averaged over the
  images. Units whose output the others can reproduce score lowest and go first.
  Rows and columns: a convolution's feature map (after the batch norm and activation that
  follow it, where the next layer reads it) as channels x positions; a primary-capsule layer as
  types x (positions x dims); a capsule layer as capsules x dims.
- `"activity"`: the mean unit output on the data: mean |activation| of a channel, mean capsule
  length of a capsule type or capsule. Inactive (vanishing) capsules score ~0 and go first -
  "dropping inactive capsules" in Sahu and Altahhan's words.

>>> import kcaps, numpy as np
>>> model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2))
>>> scores = unit_scores(model, ["conv1"], "l1")
>>> scores["conv1"].shape
(8,)
"""
import numpy as np

from kcaps.layers import CapsuleDense, PrimaryCapsules
from kcaps.models.capsule_model import probe
from kcaps.pruning import structure
from kcaps.registry import Registry

# name -> `(graph, {name: layer}, data, batch_size) -> {name: scores}`
CRITERIA = Registry("pruning criterion", "pruning criteria", allow_callables=False)


def unit_scores(model, names, criterion="l1", data=None, batch_size=64):
    """`{layer name: scores of its units}` (higher = more important).

    Args:
      model: a functional or Sequential Keras model.
      names: the prunable layers to score.
      criterion: `"l1"`, `"chip"` or `"activity"` (module doc).
      data: images (a NumPy array, a few hundred are plenty) for the data-driven criteria.
      batch_size: images per forward pass.
    """
    score = CRITERIA.get(criterion)
    graph = structure.Graph(model)
    layers = {name: structure.check_prunable(graph, name) for name in names}
    return score(graph, layers, data, batch_size)


@CRITERIA.register("l1")
def _l1(graph, layers, data, batch_size):
    return {name: l1_scores(layer) for name, layer in layers.items()}


def needs_data(criterion):
    """Whether the named criterion scores units on data (a ValueError for an unknown name)."""
    return CRITERIA.get(criterion) is not _l1


def _needs_data(criterion, data):
    if data is None or len(data) == 0:
        raise ValueError(f"pruning criterion {criterion!r} needs `data` (a batch of inputs)")


@CRITERIA.register("chip")
def _chip(graph, layers, data, batch_size):
    _needs_data("chip", data)
    outputs = layer_outputs(graph, list(layers), data, batch_size)
    return {name: chip_scores(unit_rows(layers[name], value)) for name, value in outputs.items()}


@CRITERIA.register("activity")
def _activity(graph, layers, data, batch_size):
    _needs_data("activity", data)
    outputs = layer_outputs(graph, list(layers), data, batch_size)
    return {name: activity_scores(layers[name], value) for name, value in outputs.items()}


def l1_scores(layer):
    """L1 norm of each unit's weights: filters, capsule types' filter groups, capsules' matrices."""
    if isinstance(layer, CapsuleDense):
        return np.abs(layer.projection.kernel.numpy()).sum(axis=(0, 1, 3))
    if isinstance(layer, PrimaryCapsules):
        # a depthwise kernel is (kh, kw, channels, 1): output channel c has the weights [..., c, :]
        axes = (0, 1, 3) if layer.depthwise else (0, 1, 2)
        per_filter = np.abs(layer.kernel.numpy()).sum(axis=axes)
        return per_filter.reshape(layer.capsule_types, layer.capsule_dim).sum(axis=1)
    return np.abs(layer.kernel.numpy()).sum(axis=(0, 1, 2))


def layer_outputs(graph, names, data, batch_size=64):
    """`{name: array}`: where the next layer reads each named layer's units, on `data`."""
    values = probe(graph.model, [_unit_tensor(graph, name) for name in names], data, batch_size)
    return dict(zip(names, values))


def _unit_tensor(graph, name):
    """The tensor where the next layer reads a layer's units (after BN/activations for convs)."""
    layer = graph.layer(name)
    if not structure.is_prunable_conv(layer):
        return layer.output
    current = name
    while True:
        consumers = graph.consumers[current]
        if len(consumers) != 1 or not isinstance(graph.layer(consumers[0]), structure.ELEMENTWISE):
            return graph.layer(current).output
        current = consumers[0]


def unit_rows(layer, value):
    """A layer's output as one matrix per image, a row per unit: `(images, units, columns)`."""
    if isinstance(layer, PrimaryCapsules):  # (b, positions*types, dim) -> (b, types, positions*dim)
        b, _, dim = value.shape
        value = value.reshape(b, -1, layer.capsule_types, dim)
        return value.transpose(0, 2, 1, 3).reshape(b, layer.capsule_types, -1)
    if isinstance(layer, CapsuleDense):  # (b, capsules, dim): already rows
        return value
    b, channels = value.shape[0], value.shape[-1]  # feature map (b, h, w, c) -> (b, c, h*w)
    return value.reshape(b, -1, channels).transpose(0, 2, 1)


def chip_scores(matrices):
    """CHIP channel independence of each row of each matrix, averaged over the matrices.

    Args:
      matrices: array `(images, units, columns)`.
    Returns:
      `(units,)` array: mean over images of `||A||_* - ||A with row c zeroed||_*`.
    """
    matrices = np.asarray(matrices, np.float64)
    return np.mean([_independence(a) for a in matrices], axis=0)


def _independence(a):
    """`||A||_* - ||A_{-c}||_*` for every row c, through Gram matrices and eigenvalues.

    The nuclear norm is the sum of sqrt(eigenvalues) of A^T A (or A A^T, whichever is smaller).
    Zeroing row c subtracts the outer product a_c a_c^T from A^T A, or zeroes row and column c of
    A A^T, so every A_{-c} costs one small symmetric eigenproblem instead of a full SVD.
    """
    units, columns = a.shape
    if columns <= units:
        gram = a.T @ a
        without = gram[None] - a[:, :, None] * a[:, None, :]
    else:
        gram = a @ a.T
        without = np.repeat(gram[None], units, axis=0)
        rows = np.arange(units)
        without[rows, rows, :] = 0.0
        without[rows, :, rows] = 0.0

    def nuclear(g):
        return np.sqrt(np.clip(np.linalg.eigvalsh(g), 0.0, None)).sum(axis=-1)

    return nuclear(gram) - nuclear(without)


def activity_scores(layer, value):
    """Mean output per unit on the data: capsule length for capsule layers, |activation| else."""
    value = np.asarray(value, np.float64)
    if isinstance(layer, CapsuleDense):
        return np.linalg.norm(value, axis=-1).mean(axis=0)
    if isinstance(layer, PrimaryCapsules):
        lengths = np.linalg.norm(value, axis=-1).reshape(len(value), -1, layer.capsule_types)
        return lengths.mean(axis=(0, 1))
    return np.abs(value).reshape(-1, value.shape[-1]).mean(axis=0)
