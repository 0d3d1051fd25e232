"""Channel pruning that really shrinks the network: select units, then rebuild a smaller model.

`prune_channels(model, ratios, criterion)` ranks the units of the named layers (see
`kcaps.pruning.criteria`), keeps the best `n - round(ratio * n)` of each, and returns a *new*,
physically smaller model of the same class with the kept weights copied into every layer the
removal touches (see `kcaps.pruning.structure`): the pruned conv's filters and bias, the batch
norm after it, the next conv's input rows, the `PrimaryCapsules` convolution, and - when whole
capsule types or capsules go - the rows of W in the next `CapsuleDense` (its N_in shrinks). The
new model is not compiled: compile it and fine-tune with a normal `model.fit`.

How a ratio applies (Renzulli and Grangetto prune the backbone to a FLOPs budget with EagleEye;
Sahu and Altahhan give each part its own ratio): `ratios` is a dict `{layer: ratio}`, or one
float for every prunable `Conv2D` and `PrimaryCapsules` layer (backbone channels and the primary
capsule types they feed, so that - with a primary layer whose kernel covers the whole map - the
number of primary capsules follows the channel count, as in Renzulli and Grangetto).

>>> import kcaps, numpy as np
>>> model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2))
>>> small = prune_channels(model, 0.5)
>>> [small.get_layer(n).filters for n in ("conv1", "conv2")], small.get_layer("primary_capsules").capsule_types
([4, 8], 1)
"""
import copy
import numbers

import numpy as np
import tensorflow as tf

from kcaps.layers import PrimaryCapsules
from kcaps.pruning import criteria as criteria_lib
from kcaps.pruning import structure


def check_ratio(name, ratio):
    """Return `ratio` as float, or raise a ValueError naming the layer and the value."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"layer '{name}': pruning ratio must be a number in [0, 1), got {ratio!r}")
    return float(ratio)


def layer_ratios(model, ratios):
    """`{layer: ratio}` from a dict or one float (every prunable Conv2D and PrimaryCapsules)."""
    graph = structure.Graph(model)
    if isinstance(ratios, dict):
        for name in ratios:
            structure.check_prunable(graph, name)
        return {name: check_ratio(name, ratio) for name, ratio in ratios.items()}
    check_ratio("every backbone layer", ratios)
    names = [name for name in graph.order
             if structure.is_prunable_conv(graph.layer(name))
             or isinstance(graph.layer(name), PrimaryCapsules)]
    # A conv that makes depthwise primary capsules loses channels only with whole capsule types.
    sources = {structure.depthwise_source(graph, name) for name in names
               if structure._is_depthwise_primary(graph.layer(name))}
    names = [name for name in names if name not in sources]
    if not names:
        raise ValueError(f"model '{model.name}' has no Conv2D or PrimaryCapsules layer to prune")
    return {name: float(ratios) for name in names}


def kept_count(layer, name, ratio):
    """How many units survive `ratio`; a ValueError if none would."""
    count = structure.unit_count(layer)
    kept = count - int(round(ratio * count))
    if kept < 1:
        raise ValueError(
            f"layer '{name}': ratio {ratio} would leave 0 of {count} {structure.unit_name(layer)}")
    return kept


def select(model, ratios, criterion="l1", data=None, scores=None, alive=None):
    """Choose the units to keep: `{layer: sorted kept indices}`.

    Args:
      model: a functional or Sequential Keras model (strip tfmot wrappers first).
      ratios: `{layer: ratio}` or one float (module doc); each ratio in [0, 1).
      criterion: `"l1"`, `"chip"` or `"activity"` (`kcaps.pruning.criteria`).
      data: a batch of inputs, for `"chip"` and `"activity"`.
      scores: precomputed `{layer: scores}` (overrides `criterion`).
      alive: `{layer: indices}` still present (for iterative pruning with masks); the removed
        ones are never chosen again, and the ratio counts against the original unit count.
    """
    ratios = layer_ratios(model, ratios)
    graph = structure.Graph(model)
    counts = {name: kept_count(graph.layer(name), name, ratio) for name, ratio in ratios.items()}
    if scores is None:
        scores = criteria_lib.unit_scores(model, list(ratios), criterion, data)
    keep = {}
    for name, kept in counts.items():
        score = np.asarray(scores[name], np.float64).copy()
        if alive is not None and name in alive:
            dead = np.ones(score.shape, bool)
            dead[np.asarray(alive[name], int)] = False
            score[dead] = -np.inf
            kept = min(kept, len(alive[name]))
        order = np.argsort(-score, kind="stable")  # ties: lower index first
        keep[name] = np.sort(order[:kept])
    structure.propagate(graph, keep)  # fail here, before anything changes, if a plan is invalid
    return keep


def shrink(model, keep):
    """A new model with only the units in `keep` (`{layer: kept indices}`) and their weights.

    The model is rebuilt from its config with smaller layers (same class, names and topology),
    and every weight is copied, sliced where a removal touches it.
    """
    graph = structure.Graph(model)
    plan = structure.propagate(graph, keep)
    config = copy.deepcopy(model.get_config())
    for entry in config["layers"]:
        entry.pop("build_config", None)  # layers are rebuilt for their new input shapes
        name = entry["config"]["name"]
        if name in plan and graph.layer(name) is not None:
            in_sel, out_sel = plan[name]
            structure.resized_config(graph.layer(name), entry["config"], in_sel, out_sel)
    small = model.__class__.from_config(config)
    for name in graph.order:
        old = graph.layer(name)
        if old is None or not old.weights:
            continue
        new = small.get_layer(name)
        in_sel, out_sel = plan[name]
        specs = structure.weight_axes(old, in_sel, out_sel)
        new_specs = structure.weight_axes(new, in_sel, out_sel) if specs else []
        touched = {id(v) for v, _ in specs}
        for (variable, axes), (target, _) in zip(specs, new_specs):
            target.assign(_take(variable.numpy(), axes))
        rest_old = [v for v in old.weights if id(v) not in touched]
        rest_new = [v for v in new.weights if id(v) not in {id(t) for t, _ in new_specs}]
        for variable, target in zip(rest_old, rest_new):
            target.assign(variable.numpy())
    return small


def _take(array, axes):
    for axis, keep in axes:
        array = np.take(array, keep, axis=axis)
    return array


def masks(model, keep):
    """`[(variable, 0/1 mask)]` that zero exactly the weights `shrink(model, keep)` would drop.

    Multiplying the weights by these masks makes the model compute what the shrunk model
    computes, for removed channels and capsule types (their outputs and every weight that reads
    them are zero). For removed output capsules of a `CapsuleDense` the equivalence is close but
    not exact: a zeroed capsule still takes a share of each input's routing softmax.
    """
    graph = structure.Graph(model)
    plan = structure.propagate(graph, keep)
    result = []
    for name in graph.order:
        layer = graph.layer(name)
        if layer is None:
            continue
        in_sel, out_sel = plan[name]
        for variable, axes in structure.weight_axes(layer, in_sel, out_sel):
            mask = np.ones(variable.shape, np.float32)
            for axis, kept in axes:
                indicator = np.zeros(variable.shape[axis], np.float32)
                indicator[kept] = 1.0
                shape = [1] * len(variable.shape)
                shape[axis] = -1
                mask = mask * indicator.reshape(shape)
            result.append((variable, mask))
    return result


def apply_masks(mask_list):
    """Multiply each variable by its mask (in place)."""
    for variable, mask in mask_list:
        variable.assign(variable * tf.constant(mask, variable.dtype))


def prune_channels(model, ratios, criterion="l1", data=None):
    """Rank units by `criterion`, drop `ratio` of each named layer, return the smaller model.

    Args:
      model: a functional or Sequential Keras model, e.g. a `kcaps.models.CapsuleModel`.
      ratios: `{layer: ratio}` or one float for every prunable Conv2D and PrimaryCapsules layer;
        each ratio in [0, 1). `kcaps.pruning.prunable_units(model)` lists the candidates.
      criterion: `"l1"` (no data), `"chip"` or `"activity"` (need `data`).
      data: a batch of inputs for the data-driven criteria.
    Returns:
      A new, uncompiled model of the same class with the kept weights.
    Raises:
      ValueError: a ratio outside [0, 1), a layer that is not prunable, a ratio that would
        leave no unit, or a removal that reaches a layer the surgery cannot resize.
    """
    return shrink(model, select(model, ratios, criterion, data))
