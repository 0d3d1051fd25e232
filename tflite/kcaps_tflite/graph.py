"""What a converted model contains: its operators, their tensor types, and the Keras layer of each.

Read straight from the flatbuffer (LiteRT's generated schema), so it works for any `.tflite`
file, including ones with custom ops that no interpreter here can load.

Layer attribution uses the tensor names the converter writes (`model/layer/.../op`): an operator
belongs to the layer named in its first output's name. Operators the converter adds itself
(`tfl.quantize`, `tfl.dequantize`) carry no layer name and take the layer of the operator before
them in the execution order. Inside a capsule layer (`CapsuleDense`), operators under
`<layer>/projection/` make the prediction vectors u_hat; every other operator of the layer is
routing (softmax, weighted sums, squash, agreement).
"""
import collections
import dataclasses
import struct

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from kcaps_tflite import files

OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
_TYPE_NAMES = {code: name.lower() for name, code in vars(schema.TensorType).items()
               if not name.startswith("_")}

PROJECTION = "projection"
ROUTING = "routing"


@dataclasses.dataclass(frozen=True)
class Operator:
    """One node of the main subgraph, in execution order."""

    index: int
    name: str  # builtin name (`CONV_2D`) or the custom code (`LceBconv2d`)
    custom: bool
    input_types: tuple  # dtype names of the non-optional inputs ("int8", "float32", ...)
    output_types: tuple
    output_name: str  # name of the first output tensor

    @property
    def layer(self):
        """The Keras layer path in the output name (without the model prefix), or None."""
        path = self.output_name.split(";")[0]
        if path.startswith("tfl.") or "/" not in path:
            return None
        return path.split("/")[1]

    @property
    def is_quantized(self):
        """True if no activation of this operator is float (int32 shape/axis inputs allowed)."""
        return not any(t.startswith("float") for t in self.input_types + self.output_types)


@dataclasses.dataclass
class Graph:
    """The operators of a TFLite model's main subgraph, with their inputs and outputs."""

    operators: list
    input_types: tuple
    output_types: tuple
    input_shapes: tuple
    size_bytes: int

    def op_counts(self):
        """`{op name: count}` in first-seen order."""
        return dict(collections.Counter(op.name for op in self.operators))

    def float_operators(self):
        """Operators with a float activation (the float "islands" of a quantized model)."""
        return [op for op in self.operators if not op.is_quantized]

    def layers(self):
        """The layer of every operator (inheriting the previous operator's for converter ops)."""
        layers, current = [], None
        for op in self.operators:
            current = op.layer or current
            layers.append(current)
        return layers

    def capsule_layers(self):
        """Names of the layers that have a `projection` sub-layer (CapsuleDense)."""
        return sorted({op.output_name.split(";")[0].split("/")[1] for op in self.operators
                       if f"/{PROJECTION}/" in op.output_name.split(";")[0]
                       and op.output_name.count("/") >= 2})

    def parts(self):
        """For each operator: "projection", "routing" (inside a capsule layer) or its layer name."""
        capsule = set(self.capsule_layers())
        parts = []
        for op, layer in zip(self.operators, self.layers()):
            if layer in capsule:
                parts.append(PROJECTION if f"{layer}/{PROJECTION}/" in op.output_name else ROUTING)
            else:
                parts.append(layer or "other")
        return parts


def read(model, source=None):
    """A `Graph` from `.tflite` bytes or a path; TFLiteFileError if the flatbuffer is unreadable."""
    data, source = files.model_bytes(model, source)
    try:
        root = schema.Model.GetRootAs(data, 0)
        subgraph = root.Subgraphs(0)
        codes = [root.OperatorCodes(i) for i in range(root.OperatorCodesLength())]
        tensors = [subgraph.Tensors(i) for i in range(subgraph.TensorsLength())]

        def type_name(index):
            return _TYPE_NAMES.get(tensors[index].Type(), str(tensors[index].Type()))

        operators = []
        for k in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(k)
            code = codes[op.OpcodeIndex()]
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = builtin == schema.BuiltinOperator.CUSTOM
            name = code.CustomCode().decode() if custom else OP_NAMES.get(builtin, str(builtin))
            inputs = [i for i in op.InputsAsNumpy() if i >= 0] if op.InputsLength() else []
            outputs = list(op.OutputsAsNumpy()) if op.OutputsLength() else []
            operators.append(Operator(
                index=k, name=name, custom=custom,
                input_types=tuple(type_name(i) for i in inputs),
                output_types=tuple(type_name(i) for i in outputs),
                output_name=tensors[outputs[0]].Name().decode() if outputs else ""))
        graph_inputs = list(subgraph.InputsAsNumpy())
        graph_outputs = list(subgraph.OutputsAsNumpy())
        return Graph(
            operators=operators,
            input_types=tuple(type_name(i) for i in graph_inputs),
            output_types=tuple(type_name(i) for i in graph_outputs),
            input_shapes=tuple(tuple(int(d) for d in np.atleast_1d(tensors[i].ShapeAsNumpy()))
                               for i in graph_inputs),
            size_bytes=len(data))
    except (IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError,
            struct.error) as error:
        # The flatbuffer library raises these on offsets that point outside a truncated buffer.
        raise files.TFLiteFileError(
            f"{source}: the TFLite flatbuffer cannot be read ({type(error).__name__}: {error}); "
            f"the file is truncated or corrupt") from None
