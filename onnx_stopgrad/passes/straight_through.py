"""Straight-through estimators: keep a node's forward value, pass its gradient as identity.

``straight_through(model, "Round_3")`` wraps a single-input, same-shape node (Round,
Sign, Floor, Ceil, ...) or a chain of them, given as its first and last node (a
fake-quantize ``Div -> Round -> Mul -> Clip``), in a straight-through construct (see
:mod:`._constructs`): its readers get the node's output ``q`` unchanged, and the gradient
reaching them flows to the chain's input ``x`` as if the chain were the identity.
The chain may read constants (initializers, Constant nodes) besides ``x``; nothing
flows back into them.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx

from ..errors import ConstructError, TensorNotFoundError
from ..graph import iter_nodes, node_label, subgraphs, validate
from . import _constructs as family
from ._model import ModelInput, open_model
from ._select import node_names, not_found_message
from .family_reports import StraightThroughReport

__all__ = ["ELEMENTWISE", "straight_through", "straight_through_in_place", "wrap_straight_through"]

log = logging.getLogger(__name__)

#: Op types a straight-through chain may hold: each output element depends on the same
#: element of the input (and constants), so "the gradient of the identity" is meaningful.
ELEMENTWISE = frozenset(
    {
        "Abs", "Add", "BitShift", "Cast", "Ceil", "Clip", "Div", "Floor", "Identity", "IsInf", "IsNaN",
        "Max", "Min", "Mod", "Mul", "Neg", "Pow", "Reciprocal", "Relu", "Round", "Sigmoid", "Sign",
        "Sub", "Tanh", "Where", "QuantizeLinear", "DequantizeLinear", "Equal", "Greater", "Less",
        "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "HardSigmoid", "HardSwish", "LeakyRelu",
    }
)  # fmt: skip


def straight_through(
    model: ModelInput, node: str, last: str | None = None, input: str | None = None
) -> tuple[Any, StraightThroughReport]:
    """Pass the gradient straight through ``node`` (or the chain ``node`` .. ``last``).

    ``input`` names the tensor of ``node`` that receives the gradient. By default it is
    the one input that is not a constant, else the one initializer (a weight next to
    Constant nodes); name it when there are several (a weight and an initializer scale).
    Returns ``(model, report)``; ``model`` is a ModelProto (copied), a path or an
    onnx-graphsurgeon Graph.
    """
    proto, back = open_model(model)
    report = straight_through_in_place(proto, node, last, input)
    return back(proto), report


def straight_through_in_place(
    model: onnx.ModelProto, node: str, last: str | None = None, input: str | None = None
) -> StraightThroughReport:
    """Like :func:`straight_through`, but changes ``model`` itself (nothing, on an error)."""
    validate(model)  # one-line errors for malformed graphs before anything else
    graph = model.graph
    first_index = _find_node(model, node)
    last_index = first_index if last is None or last == node else _find_node(model, last)
    span = (node,) if last_index == first_index else (node, last or node)
    chain = _chain(graph, first_index, last_index)
    x = _input(graph, first_index, input)
    _check_single_input(model, chain, x)
    outputs = [name for name in graph.node[last_index].output if name]
    if len(outputs) != 1:
        raise ConstructError(f"node {span[-1]!r} has {len(outputs)} outputs; straight-through needs one")
    q = outputs[0]
    _check_same_tensor_type(model, x, q, span)
    if any(index in family.members(model) for index in chain):
        return StraightThroughReport(span, skipped="it is part of a gradient construct already")
    direct, nested = family.node_readers(model, q, chain)
    if q in {c.quantized for c in family.find_constructs(model)} and not (
        set(direct) - set(family.members(model))
    ):
        return StraightThroughReport(span, skipped="its output is passed straight through already")
    construct = wrap_straight_through(model, x, q, last_index + 1, direct, nested)
    opset_added = family.ensure_opset(model)
    (info,) = family.describe(model, [construct])
    return StraightThroughReport(span, construct=info, opset_added=opset_added)


def wrap_straight_through(
    model: onnx.ModelProto, x: str, q: str, position: int, readers: list[int], nested: list[int]
) -> family.Construct:
    """Insert ``y = stop(q) - (stop(x) - x)`` at ``position``; ``readers`` read ``y`` instead of ``q``."""
    graph = model.graph
    skip = set(family.members(model))
    readers = [i for i in readers if i not in skip]
    if nested:
        holder = node_label(graph.node[nested[0]], nested[0])
        raise ConstructError(
            f"node {holder!r} reads {q!r} inside its subgraph; "
            "straight-through rewires main-graph readers only"
        )
    if not readers:
        raise ConstructError(
            f"nothing in the graph reads {q!r} (graph outputs keep their values); "
            "straight-through changes what the nodes reading it see"
        )
    prefix = family.allocate_prefix(model, x, family.STRAIGHT_THROUGH)
    output = f"{prefix}/output"
    for index in readers:
        node = graph.node[index]
        for slot, name in enumerate(node.input):
            if name == q:
                node.input[slot] = output
    for new in reversed(family.straight_through_nodes(prefix, x, q, output)):
        graph.node.insert(position, new)
    return next(c for c in family.find_constructs(model) if c.name == prefix)


def _find_node(model: onnx.ModelProto, name: str) -> int:
    for index, node in enumerate(model.graph.node):
        if node_label(node, index) == name:
            return index
    if any(node.name == name for node, _ in iter_nodes(model.graph)):
        raise ConstructError(
            f"node {name!r} lies inside a subgraph; straight-through works on the main graph"
        )
    raise TensorNotFoundError(not_found_message("node", name, node_names(model)))


def _chain(graph: onnx.GraphProto, first: int, last: int) -> list[int]:
    """Indices of the nodes on paths from ``first`` to ``last`` (both included)."""
    if first == last:
        return [first]
    reached = set(graph.node[first].output)
    forward = {first}
    for index in range(first + 1, len(graph.node)):
        if reached & set(graph.node[index].input):
            forward.add(index)
            reached.update(graph.node[index].output)
    if last not in forward:
        first_label, last_label = node_label(graph.node[first], first), node_label(graph.node[last], last)
        raise ConstructError(
            f"node {last_label!r} does not read the output of {first_label!r}; "
            "give a chain's first node, then its last"
        )
    needed = set(graph.node[last].input)
    chain = {last}
    for index in sorted(forward - {last}, reverse=True):
        if needed & set(graph.node[index].output):
            chain.add(index)
            needed.update(graph.node[index].input)
    return sorted(chain)


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Initializers, and outputs of nodes computed from constants alone (Constant, Cast of one)."""
    names = {t.name for t in graph.initializer}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        plain = not node.domain and not node.op_type.startswith("Random")
        if plain and all(name in names for name in inputs) and not any(subgraphs(node)):
            names.update(name for name in node.output if name)
    return names


def _input(graph: onnx.GraphProto, first: int, chosen: str | None) -> str:
    node = graph.node[first]
    label = node_label(node, first)
    inputs = [name for name in node.input if name]
    if chosen is not None:
        if chosen not in inputs:
            raise TensorNotFoundError(
                f"node {label!r} does not read {chosen!r}; its inputs are: {', '.join(inputs)}"
            )
        return chosen
    constants = _constants(graph)
    variable = list(dict.fromkeys(name for name in inputs if name not in constants))
    initializers = {t.name for t in graph.initializer}
    weights = list(dict.fromkeys(name for name in inputs if name in initializers))  # e.g. Div(W, Constant)
    candidates = variable or weights or list(dict.fromkeys(inputs))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConstructError(f"node {label!r} has no input to pass a gradient to")
    raise ConstructError(
        f"node {label!r} reads {', '.join(candidates)}; name the one that gets the gradient with --input"
    )


def _check_single_input(model: onnx.ModelProto, chain: list[int], x: str) -> None:
    graph = model.graph
    produced = {name for index in chain for name in graph.node[index].output}
    constants = _constants(graph)
    for index in chain:
        node = graph.node[index]
        if node.domain not in ("", "ai.onnx") or node.op_type not in ELEMENTWISE:
            raise ConstructError(
                f"node {node_label(node, index)!r} ({node.op_type}) is not elementwise; straight-through "
                "works on single-input, same-shape nodes "
                "(Round, Sign, Floor, Ceil, Clip, a fake-quantize chain)"
            )
        if any(subgraphs(node)):
            raise ConstructError(
                f"node {node_label(node, index)!r} has a subgraph; straight-through needs plain nodes"
            )
        for name in node.input:
            if name and name != x and name not in produced and name not in constants:
                raise ConstructError(
                    f"node {node_label(node, index)!r} also reads {name!r}: straight-through needs a "
                    f"single-input node or chain (constants and initializers allowed besides {x!r})"
                )


def _check_same_tensor_type(model: onnx.ModelProto, x: str, q: str, span: tuple[str, ...]) -> None:
    """Refuse when ``q``'s element type or shape provably differs from ``x``'s."""
    elem_x = family.check_float(model, x, "input")
    elem_q = family.element_type(model, q)
    what = " .. ".join(span)
    if elem_q is not None and elem_q != elem_x:
        names = (onnx.TensorProto.DataType.Name(t).lower() for t in (elem_x, elem_q))
        raise ConstructError(
            f"{what} turns {next(names)} into {next(names)}; straight-through needs the same type"
        )
    shapes = _shapes(model, (x, q))
    shape_x, shape_q = shapes.get(x), shapes.get(q)
    if shape_x is None or shape_q is None:
        log.warning("could not infer the shapes of %r and %r; assuming %s keeps the shape", x, q, what)
        return
    differs = len(shape_x) != len(shape_q) or any(
        a is not None and b is not None and a != b for a, b in zip(shape_x, shape_q, strict=True)
    )
    if differs:
        raise ConstructError(
            f"{what} changes the shape {_text(shape_x)} -> {_text(shape_q)}; straight-through needs "
            "a same-shape node (Round, Sign, Floor, Ceil, a fake-quantize chain)"
        )


def _shapes(model: onnx.ModelProto, names: tuple[str, ...]) -> dict[str, tuple[int | str | None, ...]]:
    graph = family.inferred_graph(model)
    shapes: dict[str, tuple[int | str | None, ...]] = {}
    for tensor in graph.initializer:
        if tensor.name in names:
            shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name in names and value.name not in shapes and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in dims
            )
    return shapes


def _text(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
