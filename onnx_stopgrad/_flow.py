"""Gradient-flow analysis: which parameters a StopGradient cuts off from the loss.

The graph is read as a directed graph over tensor names: every node links each of its
inputs (including outer-scope tensors its subgraphs read) to each of its outputs; a
subgraph's outputs link to the node's outputs. Links out of a StopGradient node are
*blocked*. A parameter is a floating-point initializer of the main graph.

* ``trainable``: has a path to a target that crosses no StopGradient.
* ``frozen``: reaches a target only through StopGradient nodes.
* ``partially_blocked``: trainable, but some of its paths cross a StopGradient.
* ``unreachable``: no path to any target at all (a stop is not the reason).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import onnx

from ._names import DOMAIN, OP_TYPE
from .errors import InvalidModelError

__all__ = [
    "MAX_DEPTH",
    "too_deep_error",
    "not_utf8_error",
    "GradientFlow",
    "analyze_gradient_flow",
    "is_stop_gradient",
    "node_reads",
    "iter_nodes",
    "node_label",
    "FLOAT_TYPES",
]

#: Element types that can receive gradients.
FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    }
)

#: Deepest nesting of subgraphs (If/Loop/Scan inside each other) the walks accept; a
#: model file cannot nest deeper than about 30 (protobuf's parse limit), a ModelProto
#: built in memory can, and would otherwise end in a RecursionError.
MAX_DEPTH = 64


def too_deep_error() -> InvalidModelError:
    return InvalidModelError(
        f"invalid model: subgraphs nested more than {MAX_DEPTH} levels deep (If/Loop/Scan "
        "inside each other); onnx-stopgrad refuses such models"
    )


def not_utf8_error() -> InvalidModelError:
    return InvalidModelError("model is corrupt: a tensor/node name is not valid UTF-8; re-export the model")


def is_stop_gradient(node: onnx.NodeProto) -> bool:
    """True for a node of this project's StopGradient op."""
    return node.op_type == OP_TYPE and node.domain == DOMAIN


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``<op_type>#<index>`` for an unnamed node.

    Raises InvalidModelError for a name that is not valid UTF-8 (protobuf gives bytes).
    """
    name = node.name
    if name.__class__ is bytes:
        raise not_utf8_error()
    return name or f"{node.op_type}#{index}"


def iter_nodes(graph: onnx.GraphProto, _depth: int = 0) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node of ``graph`` and of its subgraphs (depth first), with its own graph.

    Raises InvalidModelError when subgraphs nest deeper than :data:`MAX_DEPTH`.
    """
    if _depth > MAX_DEPTH:
        raise too_deep_error()
    for node in graph.node:
        yield node, graph
        for sub in _subgraphs(node):
            yield from iter_nodes(sub, _depth + 1)


def node_reads(node: onnx.NodeProto, _depth: int = 0) -> list[str]:
    """The node's inputs plus the outer-scope tensors its subgraphs read, without repeats."""
    reads = [name for name in node.input if name]
    for sub in _subgraphs(node):
        reads.extend(_free_names(sub, _depth + 1))
    return list(dict.fromkeys(reads))


def _free_names(graph: onnx.GraphProto, depth: int) -> list[str]:
    """Names ``graph`` reads (or passes out as outputs) without defining them itself."""
    if depth > MAX_DEPTH:
        raise too_deep_error()
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined.update(s.values.name for s in graph.sparse_initializer)
    free: list[str] = []
    for node in graph.node:
        free.extend(n for n in node_reads(node, depth) if n not in defined)
        defined.update(node.output)
    free.extend(o.name for o in graph.output if o.name and o.name not in defined)
    return free


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


@dataclass(frozen=True)
class GradientFlow:
    """Result of :func:`analyze_gradient_flow`; parameter names sorted within each group."""

    targets: tuple[str, ...]
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    partially_blocked: tuple[str, ...]
    unreachable: tuple[str, ...]
    #: For each frozen or partially blocked parameter, the StopGradient nodes on its paths.
    blocking_stops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Nodes that feed a target only through StopGradient nodes (no gradient reaches them).
    blocked_nodes: tuple[str, ...] = ()


class _TensorGraph:
    """Links between tensor names; blocked links are those out of StopGradient nodes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.open_preds: dict[str, set[str]] = defaultdict(set)
        self.all_preds: dict[str, set[str]] = defaultdict(set)
        self.stops: list[tuple[str, str, str]] = []  # (label, input, output)
        self.node_outputs: list[tuple[str, tuple[str, ...]]] = []
        self._add_graph(graph, 0)

    def _add_graph(self, graph: onnx.GraphProto, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise too_deep_error()
        for index, node in enumerate(graph.node):
            label = node_label(node, index)
            sources = [name for name in node.input if name]
            for sub in _subgraphs(node):
                self._add_graph(sub, depth + 1)
                sources.extend(out.name for out in sub.output)
            outputs = tuple(name for name in node.output if name)
            self.node_outputs.append((label, outputs))
            stop = is_stop_gradient(node)
            if stop and sources and outputs:
                self.stops.append((label, sources[0], outputs[0]))
            for out in outputs:
                self.all_preds[out].update(sources)
                if not stop:
                    self.open_preds[out].update(sources)

    @staticmethod
    def walk_back(start: Iterable[str], preds: dict[str, set[str]]) -> set[str]:
        seen = set(start)
        stack = list(seen)
        while stack:
            for pred in preds.get(stack.pop(), ()):
                if pred not in seen:
                    seen.add(pred)
                    stack.append(pred)
        return seen


def _parameter_names(graph: onnx.GraphProto) -> list[str]:
    """Names of the float initializers; a name that is not UTF-8 is a corrupt model."""
    names = []
    for tensor in graph.initializer:
        if tensor.data_type in FLOAT_TYPES:
            try:
                name = tensor.name
            except UnicodeDecodeError:  # protobuf does not check proto2 strings when parsing
                name = None
            if not isinstance(name, str):
                raise InvalidModelError(
                    "an initializer name is not valid UTF-8; the model file is corrupt"
                )
            names.append(name)
    return names


def analyze_gradient_flow(
    model: onnx.ModelProto | onnx.GraphProto, targets: Iterable[str] | None = None
) -> GradientFlow:
    """Classify the float initializers of ``model`` by how gradients reach them.

    ``targets`` are the tensors a loss is computed from (default: every graph output).
    """
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    target_names = tuple(targets) if targets is not None else tuple(o.name for o in graph.output)
    links = _TensorGraph(graph)
    open_reach = links.walk_back(target_names, links.open_preds)
    any_reach = links.walk_back(target_names, links.all_preds)

    params = sorted(_parameter_names(graph))
    behind_stop: dict[str, list[str]] = defaultdict(list)
    for label, stop_in, stop_out in links.stops:
        if stop_out in any_reach:
            for name in links.walk_back([stop_in], links.all_preds):
                behind_stop[name].append(label)

    trainable = [p for p in params if p in open_reach]
    frozen = [p for p in params if p in any_reach and p not in open_reach]
    partial = [p for p in trainable if p in behind_stop]
    unreachable = [p for p in params if p not in any_reach]
    blocked_nodes = [
        label
        for label, outputs in links.node_outputs
        if outputs and any(o in any_reach for o in outputs) and not any(o in open_reach for o in outputs)
    ]
    return GradientFlow(
        targets=target_names,
        trainable=tuple(trainable),
        frozen=tuple(frozen),
        partially_blocked=tuple(partial),
        unreachable=tuple(unreachable),
        blocking_stops={p: tuple(dict.fromkeys(behind_stop[p])) for p in frozen + partial},
        blocked_nodes=tuple(blocked_nodes),
    )
