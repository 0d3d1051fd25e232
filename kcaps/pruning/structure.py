"""Which units of a Keras model can be removed, and which weights each removal touches.

A *unit* is what structured pruning removes as a whole: an output channel (filter) of a `Conv2D`,
a capsule type of `PrimaryCapsules` (its `capsule_dim` consecutive filters, i.e. that type's
capsule at every position), or an output capsule of a `CapsuleDense` that is not the class-capsule
layer. Removing units shrinks the tensor that the layer makes; `propagate` follows that smaller
tensor through the graph to the layers that read it:

- channel-wise layers pass the selection through unchanged (batch norm - its per-channel
  weights are sliced -, activations, dropout, pooling, padding, global pooling, depthwise
  convolution, `ChannelCorrelationLoss`); `Flatten` maps it to the flattened features;
- readers drop the matching input slice of their weights: the next `Conv2D` (kernel `cin` rows),
  the `PrimaryCapsules` convolution, a `Dense` after pooling or `Flatten`, and a `CapsuleDense`,
  whose transformation matrices W of the removed input capsules go (N_in shrinks).

A depthwise `PrimaryCapsules` (Efficient-CapsNet's) makes capsule type t from its input channels
`t * capsule_dim ...`: pruning its capsule types removes those channels in the convolution that
feeds it (through batch norm and activations), and that convolution cannot lose single channels,
which would split a capsule; its channels go only with whole capsules.

Anything else that would receive a smaller tensor (`Add`, `Concatenate`, a model output, a
shared layer, ...) makes the plan fail with a ValueError naming the layers, before any weight is
touched.

What happens at each kind of layer is one `ChannelSurgery` (the protocol), chosen from the table
`SURGERY` by the layer's class (tfmot's way: one protocol plus a table of built-in layers);
`register(LayerClass, surgery)` teaches the surgery a new layer.

>>> import kcaps
>>> model = kcaps.models.cnn_capsnet(conv_filters=(8, 16), kernel_sizes=(5, 3), strides=(2, 2))
>>> sorted(prunable_units(model).items())
[('conv1', 8), ('conv2', 16), ('primary_capsules', 2)]
"""
import dataclasses

import numpy as np
import tensorflow as tf

from kcaps.layers import CapsuleDense, PrimaryCapsules
from kcaps.losses import ChannelCorrelationLoss

_layers = tf.keras.layers

# Layers through which a channel selection passes unchanged (per-channel or elementwise work).
ELEMENTWISE = (_layers.BatchNormalization, _layers.Activation, _layers.ReLU, _layers.LeakyReLU,
               _layers.ELU, _layers.Dropout, _layers.SpatialDropout2D, _layers.GaussianNoise)
SPATIAL = (_layers.MaxPooling2D, _layers.AveragePooling2D, _layers.ZeroPadding2D,
           _layers.Cropping2D, _layers.UpSampling2D, _layers.GlobalAveragePooling2D,
           _layers.GlobalMaxPooling2D)


def is_prunable_conv(layer):
    """Whether `layer` is a plain `Conv2D` (not a subclass, not grouped, channels last)."""
    return (type(layer) is _layers.Conv2D and layer.groups == 1
            and layer.data_format == "channels_last")


@dataclasses.dataclass(frozen=True)
class Selection:
    """The kept part of one axis of a tensor after units were removed upstream.

    `axis` is -1 for channels and features, 1 for capsules. For capsule tensors made by
    `PrimaryCapsules`, `types = (positions, capsule_types, kept_types)`; capsule `i` is
    `position * capsule_types + type`, as `PrimaryCapsules` orders them.
    """

    origin: str  # the pruned layer this selection comes from (for error messages)
    axis: int
    keep: np.ndarray
    size: int
    types: tuple = None


def unsupported(selection, layer, why):
    """The ValueError for a smaller tensor reaching a layer that cannot take it."""
    return ValueError(
        f"cannot prune '{selection.origin}': its smaller output reaches layer '{layer.name}' "
        f"({type(layer).__name__}), which the channel surgery cannot resize: {why}")


class ChannelSurgery:
    """What channel pruning does with one kind of layer: the protocol of the surgery.

    Every layer that a smaller tensor reaches is asked `check_input` (raise `unsupported(...)`
    unless it can take the selection) and `output_selection` (the selection on its own output,
    or None when its weights absorb it). `weight_axes` lists the weights the selections slice,
    `resize_config` writes the smaller sizes into the layer's config. A layer whose own units can
    be removed names them (`units`, e.g. "channels") and the config field that counts them
    (`count_field`), and makes the selection of the units it keeps (`own_selection`).

    This base class is what a layer missing from the table gets: it cannot take a smaller input.
    """

    units = None
    count_field = None

    def applies(self, layer):
        """Whether this surgery handles `layer` (the table matches classes; this refines)."""
        return True

    def check_input(self, layer, in_sel):
        _require_channels(layer, in_sel)
        raise unsupported(in_sel, layer, "supported readers are Conv2D, PrimaryCapsules, Dense, "
                                         "CapsuleDense and channel-wise layers")

    def output_selection(self, layer, in_sel):
        return None

    def own_selection(self, layer, name, keep):
        raise NotImplementedError(f"{type(layer).__name__} has no prunable units")

    def weight_axes(self, layer, in_sel, out_sel):
        """`[(variable, [(axis, kept indices or None), ...]), ...]`."""
        return []

    def resize_config(self, layer, config, in_sel, out_sel):
        if _own(layer, out_sel) is not None:
            count = len(out_sel.types[2]) if out_sel.types is not None else len(out_sel.keep)
            config[self.count_field] = count


def _require_channels(layer, in_sel):
    if in_sel.axis != -1:
        raise unsupported(in_sel, layer, "only CapsuleDense reads pruned capsules")


def _own(layer, out_sel):
    """`out_sel` if it is the layer's own selection (it was pruned), else None."""
    return out_sel if out_sel is not None and out_sel.origin == layer.name else None


class ChannelWise(ChannelSurgery):
    """Per-channel or elementwise layers: the selection passes through.

    `register(MyLayer, ChannelWise())` lets channel pruning pass through a custom layer of that
    kind (one that works on each channel alone and keeps their number).
    """

    def check_input(self, layer, in_sel):
        _require_channels(layer, in_sel)

    def output_selection(self, layer, in_sel):
        return in_sel


class _BatchNormalization(ChannelWise):
    def check_input(self, layer, in_sel):
        _require_channels(layer, in_sel)
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(layer.input_shape)
        if [a % rank for a in axes] != [rank - 1]:
            raise unsupported(in_sel, layer, f"it normalizes axis {layer.axis}, not channels")

    def weight_axes(self, layer, in_sel, out_sel):
        return [(variable, [(0, in_sel.keep)]) for variable in layer.weights]


class _DepthwiseConv2D(ChannelWise):
    def output_selection(self, layer, in_sel):
        m = layer.depth_multiplier
        kept = (in_sel.keep[:, None] * m + np.arange(m)[None, :]).reshape(-1)
        return Selection(in_sel.origin, -1, kept, in_sel.size * m)

    def weight_axes(self, layer, in_sel, out_sel):
        return [(layer.depthwise_kernel, [(2, in_sel.keep)]), (layer.bias, [(0, out_sel.keep)])]


class _Flatten(ChannelSurgery):
    def check_input(self, layer, in_sel):
        _require_channels(layer, in_sel)

    def output_selection(self, layer, in_sel):
        positions = int(np.prod(layer.input_shape[1:-1])) if len(layer.input_shape) > 2 else 1
        kept = (np.arange(positions)[:, None] * in_sel.size + in_sel.keep[None, :]).reshape(-1)
        return Selection(in_sel.origin, -1, kept, positions * in_sel.size)


class _Dense(ChannelSurgery):
    """A reader of features: its kernel loses the matching input rows."""

    def check_input(self, layer, in_sel):
        _require_channels(layer, in_sel)

    def weight_axes(self, layer, in_sel, out_sel):
        return [(layer.kernel, [(0, in_sel.keep)])]


class _Conv2D(ChannelSurgery):
    """A plain convolution: loses filters (its units) and reads a smaller input."""

    units, count_field = "channels", "filters"

    def applies(self, layer):
        return is_prunable_conv(layer)

    def check_input(self, layer, in_sel):
        _require_channels(layer, in_sel)

    def own_selection(self, layer, name, keep):
        return Selection(name, -1, keep, getattr(layer, self.count_field))

    def _conv(self, layer):
        return layer

    def _filters(self, layer, own):
        return own.keep

    def weight_axes(self, layer, in_sel, out_sel):
        own = _own(layer, out_sel)
        out_keep = None if own is None else self._filters(layer, own)
        conv = self._conv(layer)
        return [(conv.kernel, [(2, None if in_sel is None else in_sel.keep), (3, out_keep)]),
                (conv.bias, [(0, out_keep)])]


class _PrimaryCapsules(_Conv2D):
    """Loses capsule types (`capsule_dim` consecutive filters each) at every position.

    Depthwise (`depthwise=True`): type t is input channels `t * capsule_dim ...`; its types are
    removed through the convolution that feeds it (`propagate`), and a channel selection reaching
    it must keep whole types.
    """

    units, count_field = "capsule types", "capsule_types"

    def applies(self, layer):
        return True

    def output_selection(self, layer, in_sel):
        if not layer.depthwise:
            return None
        dim, count = layer.capsule_dim, layer.capsule_types
        types = np.unique(in_sel.keep // dim)
        kept = set(in_sel.keep.tolist())
        split = [int(t) for t in types if not set(range(t * dim, t * dim + dim)) <= kept]
        if split:
            raise unsupported(in_sel, layer, f"its capsule types are groups of {dim} channels and "
                              f"the pruning would split capsule type(s) {split}; prune whole "
                              f"capsule types through '{layer.name}' instead")
        positions = layer.output_shape[1] // count
        indices = (np.arange(positions)[:, None] * count + types[None, :]).reshape(-1)
        return Selection(in_sel.origin, 1, indices, positions * count, (positions, count, types))

    def weight_axes(self, layer, in_sel, out_sel):
        if not layer.depthwise:
            return super().weight_axes(layer, in_sel, out_sel)
        # depth multiplier 1: channel c of the input makes channel c of the output
        return _DepthwiseConv2D().weight_axes(layer.conv, in_sel, in_sel)

    def resize_config(self, layer, config, in_sel, out_sel):
        if layer.depthwise:
            if in_sel is not None:
                config["capsule_types"] = len(in_sel.keep) // layer.capsule_dim
        else:
            super().resize_config(layer, config, in_sel, out_sel)

    def own_selection(self, layer, name, keep):
        count = layer.capsule_types
        positions = layer.output_shape[1] // count
        indices = (np.arange(positions)[:, None] * count + keep[None, :]).reshape(-1)
        return Selection(name, 1, indices, positions * count, (positions, count, keep))

    def _conv(self, layer):
        return layer.conv

    def _filters(self, layer, own):
        """Filters of the kept capsule types: type t owns filters t*dim ... t*dim + dim - 1."""
        types, dim = np.asarray(own.types[2]), layer.capsule_dim
        return (types[:, None] * dim + np.arange(dim)[None, :]).reshape(-1)


class _CapsuleDense(ChannelSurgery):
    """Loses output capsules (unless it is the class-capsule layer) and reads fewer capsules."""

    units, count_field = "capsules", "num_capsules"

    def check_input(self, layer, in_sel):
        if in_sel.axis != 1:
            raise unsupported(in_sel, layer, "it expects capsules")
        sharing = layer.projection.weight_sharing
        if sharing is not None and sharing not in ("type", "position"):
            raise unsupported(
                in_sel, layer, f"weight_sharing={sharing!r} tiles W as i mod {sharing}, so "
                "removing input capsules would hand other capsules' matrices to the survivors")
        if sharing is not None and in_sel.types is None:
            raise unsupported(in_sel, layer, f"weight_sharing={sharing!r} needs capsule types")

    def own_selection(self, layer, name, keep):
        count = layer.num_capsules
        return Selection(name, 1, keep, count, (1, count, keep))

    def weight_axes(self, layer, in_sel, out_sel):
        own = _own(layer, out_sel)
        out_keep = None if own is None else own.keep
        return [(layer.projection.kernel, [(0, _kept_matrices(layer, in_sel)), (2, out_keep)]),
                (layer.bias, [(0, out_keep)]),
                # self-attention routing: a bias per (output, input) capsule pair
                (layer.attention_bias, [(0, out_keep),
                                        (1, None if in_sel is None else in_sel.keep)])]

    def resize_config(self, layer, config, in_sel, out_sel):
        super().resize_config(layer, config, in_sel, out_sel)
        if in_sel is not None and in_sel.types is not None:
            if config.get("capsule_types") is not None:
                config["capsule_types"] = len(in_sel.types[2])


def _kept_matrices(layer, in_sel):
    """Rows of a CapsuleDense kernel that survive when input capsules `in_sel.keep` remain."""
    if in_sel is None:
        return None
    sharing = layer.projection.weight_sharing
    if sharing is None:
        return in_sel.keep
    if sharing == "type":
        return in_sel.types[2]
    return np.arange(in_sel.types[0])  # "position": one matrix per position, all positions stay


# layer class -> its surgery; a layer's class and then its base classes are looked up in order.
SURGERY = {}
_NOT_RESIZABLE = ChannelSurgery()


def register(layer_class, surgery):
    """Use `surgery` (a `ChannelSurgery`) for layers of `layer_class` and its subclasses."""
    SURGERY[layer_class] = surgery
    return surgery


for _class in ELEMENTWISE + SPATIAL + (ChannelCorrelationLoss,):
    register(_class, ChannelWise())
register(_layers.BatchNormalization, _BatchNormalization())
register(_layers.DepthwiseConv2D, _DepthwiseConv2D())
register(_layers.Flatten, _Flatten())
register(_layers.Dense, _Dense())
register(_layers.Conv2D, _Conv2D())
register(PrimaryCapsules, _PrimaryCapsules())
register(CapsuleDense, _CapsuleDense())


def surgery_for(layer):
    """The `ChannelSurgery` of `layer`: the table's entry for its class or nearest base class."""
    for cls in type(layer).__mro__:
        surgery = SURGERY.get(cls)
        if surgery is not None:
            return surgery if surgery.applies(layer) else _NOT_RESIZABLE
    return _NOT_RESIZABLE


def unit_count(layer):
    """How many units `layer` has (filters, capsule types or capsules)."""
    return getattr(layer, surgery_for(layer).count_field)


def unit_name(layer):
    """The word for a unit of `layer`, for messages."""
    return surgery_for(layer).units


class Graph:
    """The layer graph of a functional or Sequential model, read from its config."""

    def __init__(self, model):
        if not isinstance(model, tf.keras.Model):
            raise ValueError(f"expected a tf.keras.Model, got {type(model).__name__}")
        if not (model._is_graph_network or isinstance(model, tf.keras.Sequential)):
            raise ValueError(
                f"model '{model.name}' is a subclassed model; channel pruning needs a functional "
                "or Sequential model (its graph of layers)")
        self.model = model
        self.layers = {layer.name: layer for layer in model.layers}
        wrapped = [name for name, layer in self.layers.items()
                   if isinstance(layer, tf.keras.layers.Wrapper)]
        if wrapped:
            raise ValueError(
                f"model '{model.name}' has wrapped layers {wrapped}; call "
                "tfmot.sparsity.keras.strip_pruning(model) before channel pruning")
        config = model.get_config()
        self.order, self.inbound, self.shared = [], {}, set()
        previous = None
        for entry in config["layers"]:
            name = entry["config"]["name"]
            if isinstance(model, tf.keras.Sequential):
                self.inbound[name] = [] if previous is None else [previous]
                previous = name
            else:
                nodes = entry.get("inbound_nodes") or []
                if len(nodes) > 1:
                    self.shared.add(name)
                self.inbound[name] = _inbound_names(nodes[0]) if nodes else []
            self.order.append(name)
        self.outputs = ({self.order[-1]} if isinstance(model, tf.keras.Sequential)
                        else {item[0] for item in config["output_layers"]})
        self.consumers = {name: [] for name in self.order}
        for name, sources in self.inbound.items():
            for source in sources:
                self.consumers[source].append(name)

    def layer(self, name):
        return self.layers.get(name)


def _inbound_names(node):
    """Layer names in one inbound node of a functional config: `[[name, node, tensor, kw], ...]`."""
    names = []

    def visit(item):
        if isinstance(item, (list, tuple)):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                names.append(item[0])
            else:
                for child in item:
                    visit(child)

    visit(node)
    return names


def prunable_units(model):
    """`{layer name: unit count}` for every layer whose units `propagate` can remove.

    A layer counts as prunable if removing one of its units leads only to layers the surgery can
    resize; class capsules (read by the lengths and the decoder) and layers feeding an `Add` are
    not.
    """
    graph = Graph(model)
    result = {}
    for name in graph.order:
        layer = graph.layer(name)
        if _is_candidate(layer):
            try:
                propagate(graph, {name: np.arange(unit_count(layer))[1:]})
            except ValueError:
                continue
            result[name] = unit_count(layer)
    return result


def _is_candidate(layer):
    return layer is not None and surgery_for(layer).units is not None


def check_prunable(graph, name):
    """Raise a ValueError naming `name` unless it is a layer whose units can be removed."""
    layer = graph.layer(name)
    if layer is None:
        raise ValueError(
            f"model '{graph.model.name}' has no layer named '{name}'; layers: {graph.order}")
    if not _is_candidate(layer):
        kind = type(layer).__name__
        why = (" (grouped or channels_first convolutions are not supported)"
               if isinstance(layer, _layers.Conv2D) else "")
        raise ValueError(
            f"layer '{name}' ({kind}) is not prunable{why}: channel pruning removes filters of "
            "Conv2D, capsule types of PrimaryCapsules and output capsules of intermediate "
            "CapsuleDense layers")
    return layer


def own_selection(graph, name, keep):
    """The selection that removing units `keep`'s complement of layer `name` puts on its output."""
    layer = graph.layer(name)
    count = unit_count(layer)
    keep = np.asarray(sorted(set(int(k) for k in keep)), dtype=np.int64)
    if keep.size == 0:
        raise ValueError(
            f"layer '{name}': pruning would leave 0 of {count} {unit_name(layer)}")
    if keep.min() < 0 or keep.max() >= count:
        raise ValueError(
            f"layer '{name}': kept {unit_name(layer)} {keep.tolist()} out of range 0..{count - 1}")
    return surgery_for(layer).own_selection(layer, name, keep)


def _is_depthwise_primary(layer):
    return isinstance(layer, PrimaryCapsules) and layer.depthwise


def depthwise_source(graph, name):
    """The convolution whose channels make the capsules of depthwise `PrimaryCapsules` `name`.

    Walks back through batch norm and activations that nothing else reads; raises a ValueError
    naming the layers if there is no such convolution.
    """
    current = name
    while True:
        sources = graph.inbound[current]
        if len(sources) != 1:
            raise ValueError(
                f"cannot prune capsule types of depthwise PrimaryCapsules '{name}': layer "
                f"'{current}' has {len(sources)} inputs, so no single convolution makes its "
                "channels")
        source = sources[0]
        layer = graph.layer(source)
        if len(graph.consumers[source]) != 1 or source in graph.shared:
            raise ValueError(
                f"cannot prune capsule types of depthwise PrimaryCapsules '{name}': its channels "
                f"come from layer '{source}', which other layers read too")
        if is_prunable_conv(layer):
            return source
        if not isinstance(layer, ELEMENTWISE):
            raise ValueError(
                f"cannot prune capsule types of depthwise PrimaryCapsules '{name}': its channels "
                f"come from layer '{source}' ({type(layer).__name__}), not from a Conv2D through "
                "batch norm and activations")
        current = source


def _through_depthwise_primaries(graph, keep):
    """`keep` with each depthwise PrimaryCapsules' kept types as kept channels of its source."""
    result = dict(keep)
    for name, kept in keep.items():
        layer = graph.layer(name)
        if not _is_depthwise_primary(layer):
            continue
        types = own_selection(graph, name, kept).types[2]  # checks the indices
        source = depthwise_source(graph, name)
        if source in keep:
            raise ValueError(
                f"cannot prune both '{source}' and the depthwise PrimaryCapsules '{name}' it "
                f"feeds: the capsule types of '{name}' are channels of '{source}'; prune '{name}'")
        del result[name]
        dim = layer.capsule_dim
        result[source] = (np.asarray(types)[:, None] * dim + np.arange(dim)[None, :]).reshape(-1)
    return result


def propagate(graph, keep):
    """Follow the selections made by `keep` (`{layer: kept unit indices}`) through the graph.

    Returns `{layer name: (input selection or None, output selection or None)}`. Raises a
    ValueError naming the layers if a smaller tensor would reach a layer that cannot be resized.
    """
    for name in keep:
        check_prunable(graph, name)
    keep = _through_depthwise_primaries(graph, keep)
    plan = {}
    for name in graph.order:
        layer = graph.layer(name)
        sources = graph.inbound[name]
        selections = [plan[s][1] for s in sources if s in plan and plan[s][1] is not None]
        in_sel = None
        if selections:
            in_sel = selections[0]
            if len(sources) > 1:
                raise unsupported(in_sel, layer, "it has several inputs")
            if name in graph.shared:
                raise unsupported(in_sel, layer, "it is called more than once in the model")
        out_sel = _output_selection(graph, name, layer, in_sel, keep)
        if out_sel is not None and name in graph.outputs:
            raise ValueError(
                f"cannot prune '{out_sel.origin}': the smaller tensor would become model output "
                f"'{name}'")
        plan[name] = (in_sel, out_sel)
    return plan


def _output_selection(graph, name, layer, in_sel, keep):
    surgery = surgery_for(layer)
    if in_sel is not None:
        surgery.check_input(layer, in_sel)
    if name in keep:
        return own_selection(graph, name, keep[name])
    if in_sel is None:
        return None
    return surgery.output_selection(layer, in_sel)


def weight_axes(layer, in_sel, out_sel):
    """`[(variable, [(axis, kept indices), ...]), ...]` for the weights a selection touches.

    `in_sel` is the selection on the layer's input, `out_sel` its own output selection (for a
    pruned layer). Weights not listed keep their shape.
    """
    if in_sel is None and _own(layer, out_sel) is None:
        return []
    specs = []
    for variable, axes in surgery_for(layer).weight_axes(layer, in_sel, out_sel):
        axes = [(axis, keep) for axis, keep in axes if keep is not None]
        if variable is not None and axes:
            specs.append((variable, axes))
    return specs


def resized_config(layer, config, in_sel, out_sel):
    """Update a layer's config for its smaller input and output (in place)."""
    surgery_for(layer).resize_config(layer, config, in_sel, out_sel)
    return config
