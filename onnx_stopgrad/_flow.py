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

__all__ = [
    "GradientFlow",
    "analyze_gradient_flow",
    "is_stop_gradient",
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


def is_stop_gradient(node: onnx.NodeProto) -> bool:
    """True for a node of this project's StopGradient op."""
    return node.op_type == OP_TYPE and node.domain == DOMAIN


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``<op_type>#<index>`` for an unnamed node."""
    return node.name or f"{node.op_type}#{index}"


def iter_nodes(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node of ``graph`` and of its subgraphs (depth first), with its own graph."""
    for node in graph.node:
        yield node, graph
        for sub in _subgraphs(node):
            yield from iter_nodes(sub)


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
        self._add_graph(graph)

    def _add_graph(self, graph: onnx.GraphProto) -> None:
        for index, node in enumerate(graph.node):
            label = node_label(node, index)
            sources = [name for name in node.input if name]
            for sub in _subgraphs(node):
                self._add_graph(sub)
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

    params = sorted(t.name for t in graph.initializer if t.data_type in FLOAT_TYPES)
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
