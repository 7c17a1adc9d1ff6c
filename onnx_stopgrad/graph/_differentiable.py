"""THE rule for which tensors ONNX Runtime 1.19 differentiates, and the one type inference.

ORT's gradient builder (orttraining/core/framework/gradient_graph_builder.cc) skips the
*stop-gradient edges* of a node in both of its walks: ``Cast`` to a non-float type, and a
fixed table keyed by op type (``STOP_GRADIENT_EDGES`` in gradient_graph_builder.h), to
which this rule adds the inputs ORT has no gradient builder for (``Pow``'s exponent).
Only floating-point tensors carry gradients; a tensor of unknown type counts as float.
A StopGradient node has no differentiable input at all. The outer tensors a node's
subgraphs read are the subgraph nodes' own inputs, judged by this rule in turn (ORT can
only use them once its optimizer has folded the node away: see :mod:`._unsupported`).
Analysis and training both ask
:func:`differentiable_inputs`, so they cannot disagree about a parameter, and read tensor
types from :func:`infer_types` / :func:`element_types`, the one type inference.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from ._types import inferred_graph
from ._walk import is_stop_gradient, iter_graphs

__all__ = [
    "FLOAT_TYPES",
    "NON_DIFFERENTIABLE_INPUTS",
    "NO_GRADIENT_BUILDER_INPUTS",
    "ORT_STOP_GRADIENT_EDGES",
    "UNKNOWN_TYPE",
    "carries_gradient",
    "differentiable_inputs",
    "element_types",
    "infer_types",
]

#: Element types that can receive gradients.
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)

#: Stands for "element type unknown" in a type table: treated as float.
UNKNOWN_TYPE = -1

#: ONNX Runtime 1.19's stop-gradient edges (op_type -> input indices): its gradient
#: builder's ``STOP_GRADIENT_EDGES`` (orttraining/core/framework/gradient_graph_builder.h).
ORT_STOP_GRADIENT_EDGES: dict[str, frozenset[int]] = {
    op: frozenset(indices)
    for op, indices in {
        "Not": (0,), "And": (0, 1), "Or": (0, 1), "Xor": (0, 1), "Equal": (0, 1), "Less": (0, 1),
        "LessOrEqual": (0, 1), "Greater": (0, 1), "GreaterOrEqual": (0, 1), "IsInf": (0,),
        "IsNaN": (0,), "NonZero": (0,), "Shape": (0,), "Size": (0,), "ConstantOfShape": (0,),
        "BatchNormalization": (3, 4), "Gather": (1,), "GatherElements": (1,),
        "GatherND": (1,), "Reshape": (1,), "Expand": (1,), "Dropout": (1, 2), "Slice": (1, 2, 3, 4),
        "SoftmaxCrossEntropyLoss": (1, 2), "Scatter": (1,), "ScatterElements": (1,), "ScatterND": (1,),
        "OneHot": (0, 1, 2), "Where": (0,), "Range": (0, 1, 2), "Tile": (1,), "TopK": (1,),
        "Squeeze": (1,), "Unsqueeze": (1,), "ReduceSum": (1,), "Split": (1,), "Clip": (1, 2),
    }.items()
}  # fmt: skip

#: Inputs ORT 1.19 walks through but has no gradient builder for: a gradient that must
#: reach one fails the build ("GradientBuilder is not implemented for ... Pow's input exponent").
NO_GRADIENT_BUILDER_INPUTS: dict[str, frozenset[int]] = {"Pow": frozenset({1})}

#: Inputs ONNX Runtime 1.19 computes no gradient for: the two tables above. A float
#: initializer read only at such inputs, or only on paths through them, is a constant
#: to ORT: it cannot be trained.
NON_DIFFERENTIABLE_INPUTS: dict[str, frozenset[int]] = {
    op: ORT_STOP_GRADIENT_EDGES.get(op, frozenset()) | NO_GRADIENT_BUILDER_INPUTS.get(op, frozenset())
    for op in (*ORT_STOP_GRADIENT_EDGES, *NO_GRADIENT_BUILDER_INPUTS)
}

_STANDARD_DOMAINS = ("", "ai.onnx")
_NONE: frozenset[int] = frozenset()
#: Element types that carry a gradient, UNKNOWN_TYPE included.
_CARRIERS = FLOAT_TYPES | {UNKNOWN_TYPE}


def carries_gradient(name: str, types: Mapping[str, int]) -> bool:
    """Whether tensor ``name`` can carry a gradient: float, or of unknown type."""
    return types.get(name, UNKNOWN_TYPE) in _CARRIERS


def differentiable_inputs(
    node: onnx.NodeProto,
    types: Mapping[str, int],
    table: Mapping[str, frozenset[int]] = NON_DIFFERENTIABLE_INPUTS,
) -> list[str]:
    """The explicit inputs of ``node`` through which ORT passes a gradient.

    Empty for a StopGradient and for a Cast to a non-float type; otherwise every named
    float (or untyped) input except the op's stop-gradient edges. The outer tensors a
    node's subgraphs read are judged where the subgraph's nodes read them. ``table`` is
    :data:`ORT_STOP_GRADIENT_EDGES` for the edges ORT itself skips.
    """
    op_type, standard = node.op_type, node.domain in _STANDARD_DOMAINS
    if not standard and is_stop_gradient(node):
        return []
    if op_type == "Cast" and standard:
        to = next((a.i for a in node.attribute if a.name == "to"), UNKNOWN_TYPE)
        if to not in _CARRIERS:
            return []
    get, carriers = types.get, _CARRIERS
    skip = table.get(op_type) if standard else None
    if skip is None:  # the common node: every float input
        return [name for name in node.input if name and get(name, UNKNOWN_TYPE) in carriers]
    return [
        name
        for slot, name in enumerate(node.input)
        if name and slot not in skip and get(name, UNKNOWN_TYPE) in carriers
    ]


def infer_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """The tensor type (with shape where known) of every name shape inference or the model
    declares, in every graph, and of every ``Constant`` node's output.

    Inference runs on the model's weight-free copy (:mod:`._types`) and is best effort:
    where it fails, what the model declares is used.
    """
    types: dict[str, onnx.TypeProto] = {}
    for graph in iter_graphs(inferred_graph(model)):
        for value in (*graph.value_info, *graph.input, *graph.output):
            if value.type.tensor_type.elem_type:
                types.setdefault(value.name, value.type)
        for tensor in graph.initializer:
            if tensor.name not in types:
                types[tensor.name] = onnx.helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
        for name, tensor in _constants(graph):
            if name not in types:
                types[name] = onnx.helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
    return types


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor :func:`infer_types` knows (without building the types)."""
    types: dict[str, int] = {}
    for graph in iter_graphs(inferred_graph(model)):
        for value in (*graph.value_info, *graph.input, *graph.output):
            elem = value.type.tensor_type.elem_type
            if elem:
                types.setdefault(value.name, elem)
        for tensor in graph.initializer:
            types.setdefault(tensor.name, tensor.data_type)
        for name, tensor in _constants(graph):
            types.setdefault(name, tensor.data_type)
    return types


def _constants(graph: onnx.GraphProto) -> list[tuple[str, onnx.TensorProto]]:
    """``(output, value)`` of the graph's ``Constant`` nodes holding a tensor: their types
    where inference failed."""
    return [
        (node.output[0], attr.t)
        for node in graph.node
        if node.op_type == "Constant" and node.domain in _STANDARD_DOMAINS and node.output
        for attr in node.attribute
        if attr.name == "value" and attr.HasField("t")
    ]
