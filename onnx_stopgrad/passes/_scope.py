"""One pass over a model that finds where watched names are defined and read.

The rewriter never builds a full producer/consumer index (that costs more than loading
the model): it walks every graph once and records only the names it was asked about.
Each :class:`Scope` is one graph (the main graph or a subgraph of an If/Loop/Scan/...
node) with its place in the tree, so a read can be resolved to the graph that defines
the name: the innermost enclosing graph that has it as node output, input or initializer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import onnx

from .._flow import node_label

__all__ = ["Scope", "Read", "scan", "iter_scopes", "resolved_reads", "subgraph_attributes"]

_GRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


@dataclass(eq=False)
class Read:
    """Input ``slot`` of node ``index`` in ``scope`` reads a watched name.

    ``index`` is None when the reader is the subgraph's own output number ``slot``
    (a branch or loop body that passes an outer tensor straight through).
    """

    scope: Scope = field(repr=False)
    index: int | None
    slot: int

    @property
    def node(self) -> onnx.NodeProto | None:
        return None if self.index is None else self.scope.graph.node[self.index]

    @property
    def label(self) -> str:
        if self.index is None:
            return f"{self.scope.path} output {self.slot}"
        return node_label(self.scope.graph.node[self.index], self.index)

    def rewire(self, name: str) -> None:
        """Make this reader read ``name`` instead."""
        if self.index is None:
            self.scope.graph.output[self.slot].name = name
        else:
            self.scope.graph.node[self.index].input[self.slot] = name

    def top_index(self, owner: Scope) -> int:
        """Index, in ``owner``'s node list, of the node that holds this read.

        A graph output of ``owner`` itself counts as reading after the last node.
        """
        scope, index = self.scope, self.index
        if index is None:
            index = len(scope.graph.node)
        while scope is not owner:
            assert scope.parent is not None and scope.holder_index is not None
            scope, index = scope.parent, scope.holder_index
        return index

    def holder_labels(self, owner: Scope) -> list[str]:
        """The reading node and every node between it and ``owner`` that holds its graph."""
        labels = [self.label]
        scope = self.scope
        while scope is not owner and scope.parent is not None:
            holder = scope.parent.graph.node[scope.holder_index]
            labels.append(node_label(holder, scope.holder_index))
            scope = scope.parent
        return labels


@dataclass(eq=False)
class Scope:
    """A graph, where it sits in the model, and what the scan found in it."""

    graph: onnx.GraphProto = field(repr=False)
    path: str
    parent: Scope | None = field(default=None, repr=False)
    holder_index: int | None = None
    reads: dict[str, list[Read]] = field(default_factory=dict)
    #: watched name -> index of the node that outputs it
    produced: dict[str, int] = field(default_factory=dict)
    #: watched names that are inputs or initializers of this graph
    declared: set[str] = field(default_factory=set)
    #: watched names used here in any other role (node names, graph outputs, value_info)
    other: set[str] = field(default_factory=set)
    value_info: dict[str, onnx.ValueInfoProto] = field(default_factory=dict, repr=False)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict, repr=False)
    children: list[Scope] = field(default_factory=list, repr=False)

    def defines(self, name: str) -> bool:
        return name in self.produced or name in self.declared

    def chain(self) -> Iterator[Scope]:
        """This scope, then its enclosing scopes up to the main graph."""
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def uses(self, name: str) -> bool:
        return name in self.reads or self.defines(name) or name in self.other


def subgraph_attributes(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """``(attribute name, graph)`` for every subgraph attribute of ``node``."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for i, sub in enumerate(attr.graphs):
                yield f"{attr.name}[{i}]", sub


def scan(model: onnx.ModelProto, watch: Collection[str]) -> Scope:
    """Walk every graph of ``model`` once, recording only the names in ``watch``."""
    watched = watch if isinstance(watch, (set, frozenset)) else set(watch)
    root = Scope(model.graph, "")
    _scan_graph(root, watched)
    return root


def _scan_graph(scope: Scope, watch: set[str] | frozenset[str]) -> None:
    graph = scope.graph
    for value in graph.input:
        if value.name in watch:
            scope.declared.add(value.name)
            scope.value_info.setdefault(value.name, value)
    for tensor in graph.initializer:
        if tensor.name in watch:
            scope.declared.add(tensor.name)
            scope.initializers[tensor.name] = tensor
    for sparse in graph.sparse_initializer:
        if sparse.values.name in watch:
            scope.declared.add(sparse.values.name)
    for position, value in enumerate(graph.output):
        if value.name in watch:
            scope.other.add(value.name)
            scope.value_info.setdefault(value.name, value)
            if scope.parent is not None:  # may pass an outer tensor through
                scope.reads.setdefault(value.name, []).append(Read(scope, None, position))
    for value in graph.value_info:
        if value.name in watch:
            scope.other.add(value.name)
            scope.value_info[value.name] = value
    disjoint = watch.isdisjoint
    reads = scope.reads
    for index, node in enumerate(graph.node):
        inputs = node.input
        if not disjoint(inputs):
            for slot, name in enumerate(inputs):
                if name in watch:
                    reads.setdefault(name, []).append(Read(scope, index, slot))
        outputs = node.output
        if not disjoint(outputs):
            for name in outputs:
                if name in watch:
                    scope.produced.setdefault(name, index)
        if node.name in watch:
            scope.other.add(node.name)
        if node.attribute:
            for attr in node.attribute:
                if attr.type in _GRAPH_TYPES:
                    _scan_children(scope, index, node, watch)
                    break


def _scan_children(scope: Scope, index: int, node: onnx.NodeProto, watch) -> None:
    label = node_label(node, index)
    for attr_name, sub in subgraph_attributes(node):
        path = f"{scope.path}/{label}:{attr_name}" if scope.path else f"{label}:{attr_name}"
        child = Scope(sub, path, parent=scope, holder_index=index)
        scope.children.append(child)
        _scan_graph(child, watch)


def iter_scopes(root: Scope) -> Iterator[Scope]:
    """``root`` and all scopes below it, depth first."""
    yield root
    for child in root.children:
        yield from iter_scopes(child)


def resolved_reads(owner: Scope, name: str) -> list[Read]:
    """Reads of ``name`` in ``owner`` and below that see ``owner``'s definition of it."""
    found = []
    for scope in iter_scopes(owner):
        for read in scope.reads.get(name, ()):
            innermost = next(s for s in read.scope.chain() if s is owner or s.defines(name))
            if innermost is owner:
                found.append(read)
    return found
