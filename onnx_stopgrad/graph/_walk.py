"""The one depth-limited walk over a model's graphs: subgraphs, node labels, reads.

Every other module reaches a subgraph (the body of an If/Loop/Scan/... node) through
these functions, so the nesting limit, the labels and what a node reads are defined once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx

from .._names import DOMAIN, OP_TYPE
from ..errors import InvalidModelError

__all__ = [
    "MAX_DEPTH",
    "NodeSite",
    "free_names",
    "is_stop_gradient",
    "iter_graphs",
    "iter_graphs_with_attributed_nodes",
    "iter_node_sites",
    "iter_nodes",
    "node_label",
    "node_reads",
    "not_utf8_error",
    "scope_path",
    "subgraph_attributes",
    "subgraphs",
    "too_deep_error",
]

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


def scope_path(parent_path: str, holder_label: str, attribute: str) -> str:
    """Path of a subgraph: ``<holder label>:<attribute>`` below its parent graph's path."""
    own = f"{holder_label}:{attribute}"
    return f"{parent_path}/{own}" if parent_path else own


def subgraph_attributes(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """``(attribute name, graph)`` for every subgraph attribute of ``node``."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for i, sub in enumerate(attr.graphs):
                yield f"{attr.name}[{i}]", sub


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """Every subgraph ``node`` holds."""
    for _, sub in subgraph_attributes(node):
        yield sub


@dataclass(frozen=True)
class NodeSite:
    """A node, its index in its own graph, that graph, and the graph's path ("" = main)."""

    node: onnx.NodeProto
    index: int
    graph: onnx.GraphProto
    path: str

    @property
    def label(self) -> str:
        return node_label(self.node, self.index)


def iter_node_sites(graph: onnx.GraphProto, path: str = "", _depth: int = 0) -> Iterator[NodeSite]:
    """Every node of ``graph`` and of its subgraphs (depth first, a holder before its
    bodies), with where it sits. Raises InvalidModelError past :data:`MAX_DEPTH`."""
    if _depth > MAX_DEPTH:
        raise too_deep_error()
    for index, node in enumerate(graph.node):
        yield NodeSite(node, index, graph, path)
        if node.attribute:
            for attribute, sub in subgraph_attributes(node):
                inner = scope_path(path, node_label(node, index), attribute)
                yield from iter_node_sites(sub, inner, _depth + 1)


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph below it, depth first."""
    for each, _nodes in iter_graphs_with_attributed_nodes(graph):
        yield each


def iter_graphs_with_attributed_nodes(
    graph: onnx.GraphProto, _depth: int = 0
) -> Iterator[tuple[onnx.GraphProto, list[onnx.NodeProto]]]:
    """Every graph (depth first, a graph before its subgraphs) with its nodes that have
    attributes: one pass over the nodes, for callers that read attributes (tensors)."""
    if _depth > MAX_DEPTH:
        raise too_deep_error()
    attributed = [node for node in graph.node if node.attribute]
    yield graph, attributed
    for node in attributed:
        for sub in subgraphs(node):
            yield from iter_graphs_with_attributed_nodes(sub, _depth + 1)


def iter_nodes(graph: onnx.GraphProto, _depth: int = 0) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node of ``graph`` and of its subgraphs (depth first), with its own graph."""
    if _depth > MAX_DEPTH:
        raise too_deep_error()
    for node in graph.node:
        yield node, graph
        if node.attribute:
            for sub in subgraphs(node):
                yield from iter_nodes(sub, _depth + 1)


def node_reads(node: onnx.NodeProto, _depth: int = 0) -> list[str]:
    """The node's inputs plus the outer-scope tensors its subgraphs read, without repeats."""
    reads = [name for name in node.input if name]
    for sub in subgraphs(node):
        reads.extend(free_names(sub, _depth + 1))
    return list(dict.fromkeys(reads))


def free_names(graph: onnx.GraphProto, _depth: int = 0) -> list[str]:
    """Names ``graph`` reads (or passes out as outputs) without defining them itself."""
    if _depth > MAX_DEPTH:
        raise too_deep_error()
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined.update(s.values.name for s in graph.sparse_initializer)
    free: list[str] = []
    for node in graph.node:
        free.extend(n for n in node_reads(node, _depth) if n not in defined)
        defined.update(node.output)
    free.extend(o.name for o in graph.output if o.name and o.name not in defined)
    return free
