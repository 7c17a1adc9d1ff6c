"""The graph index: one pass over a model that validates it and finds where watched names
are defined and read.

The index never records every producer and reader (that costs more than loading the
model): it walks every graph once and records only the names it was asked about (and,
for :meth:`GraphIndex.with_stops`, the StopGradient nodes and their outputs).
Each :class:`Scope` is one graph (the main graph or a subgraph of an If/Loop/Scan/...
node) with its place in the tree, so a read can be resolved to the graph that defines
the name: the innermost enclosing graph that has it as node output, input or initializer.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import onnx

from ._checks import ITEM_SIZE, check_text, invalid, tensor_problem, where
from ._walk import (
    MAX_DEPTH,
    is_stop_gradient,
    iter_nodes,
    node_label,
    not_utf8_error,
    scope_path,
    subgraph_attributes,
    too_deep_error,
)

__all__ = [
    "GraphIndex",
    "Read",
    "Scope",
    "StopSite",
    "iter_scopes",
    "resolved_reads",
    "scan",
    "subgraph_attributes",
    "validate",
]

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
        scope = self.scope
        index = len(scope.graph.node) if self.index is None else self.index
        while scope is not owner:
            holder_index = scope.holder_index
            assert scope.parent is not None and holder_index is not None
            scope, index = scope.parent, holder_index
        return index

    def holder_labels(self, owner: Scope) -> list[str]:
        """The reading node and every node between it and ``owner`` that holds its graph."""
        labels = [self.label]
        scope = self.scope
        while scope is not owner and scope.parent is not None:
            assert scope.holder_index is not None  # a subgraph's scope always has its holder
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


def scan(model: onnx.ModelProto, watch: Collection[str]) -> Scope:
    """Walk every graph of ``model`` once, recording only the names in ``watch``.

    The same walk checks the graph's structure (see :mod:`._checks`) and raises
    InvalidModelError, naming the first offending node or tensor, for a broken model.
    """
    watched = watch if isinstance(watch, (set, frozenset)) else set(watch)
    root = Scope(model.graph, "")
    try:
        check_text(_model_texts(model))
        _scan_graph(root, watched, (), 0)
    except UnicodeDecodeError as exc:  # another protobuf backend may raise instead of giving bytes
        raise not_utf8_error() from exc
    return root


def _model_texts(model: onnx.ModelProto) -> list[str]:
    """The model-level strings other code copies or prints (producer, domains, metadata)."""
    texts = [model.producer_name, model.producer_version, model.domain, model.doc_string]
    texts.extend(o.domain for o in model.opset_import)
    texts.extend(text for p in model.metadata_props for text in (p.key, p.value))
    return texts


def validate(model: onnx.ModelProto) -> None:
    """Raise InvalidModelError, naming the first problem, if ``model``'s structure is broken."""
    scan(model, frozenset())


def _scan_graph(
    scope: Scope, watch: set[str] | frozenset[str], outer: tuple[set[str], ...], depth: int
) -> None:
    """Record the watched names of one graph and check its structure.

    ``outer`` holds the names the enclosing graphs define before the node holding this
    one. Names this graph defines are kept in two sets, ``plain`` (unwatched, plus "" for
    an absent optional input) and ``seen`` (watched), so that the common node (all
    inputs plain and defined, no output watched or defined before) costs one
    ``issuperset`` and two ``isdisjoint`` calls.
    """
    if depth > MAX_DEPTH:
        raise too_deep_error()
    graph = scope.graph
    plain: set[str] = set()
    for value in graph.input:
        name = value.name
        if name in plain or not name:
            raise invalid(f"graph input {name!r} of {where(scope.path)} is declared twice or has no name")
        plain.add(name)
        if name in watch:
            scope.declared.add(name)
            scope.value_info.setdefault(name, value)
    initializers: set[str] = {""}
    size_of, product, add_initializer = ITEM_SIZE.get, math.prod, initializers.add
    for tensor in graph.initializer:
        name = tensor.name
        add_initializer(name)
        raw = tensor.raw_data
        if not raw or len(raw) != product(tensor.dims[:]) * size_of(tensor.data_type, 0):
            problem = tensor_problem(tensor)  # slow path: typed fields, external data, bad sizes
            if problem is not None:
                raise invalid(f"initializer {name!r} of {where(scope.path)} {problem}")
        if name in watch:
            scope.declared.add(name)
            scope.initializers[name] = tensor
    if len(initializers) != len(graph.initializer) + 1:
        _refuse_initializer_names(scope)
    plain |= initializers  # an initializer may share a graph input's name (its default)
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        if name in plain:
            raise invalid(
                f"sparse initializer {name!r} of {where(scope.path)} is defined twice or has no name"
            )
        plain.add(name)
        if name in watch:
            scope.declared.add(name)
    seen = plain & watch
    plain -= seen
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
    unwatched = watch.isdisjoint
    all_plain, no_plain, add_plain = plain.issuperset, plain.isdisjoint, plain.update
    inner = (plain, seen, *outer)
    expected, added = len(plain) + len(seen), 0
    for index, node in enumerate(graph.node):
        # [:] copies a repeated field into a list in C: cheaper than iterating it in a set method
        if not all_plain(node.input[:]):  # reads a watched, outer or undefined name
            _check_reads(scope, index, node, watch, inner)
        name = node.name
        if name in watch:
            scope.other.add(name)
        elif name.__class__ is not str:  # protobuf gives invalid UTF-8 as bytes
            raise not_utf8_error()
        if node.attribute:
            for attr in node.attribute:
                if attr.type in _GRAPH_TYPES:  # scanned before the node's own outputs exist
                    _scan_children(scope, index, node, watch, inner, depth)
                    break
        outputs = node.output[:]
        if no_plain(outputs) and unwatched(outputs):
            add_plain(outputs)
            added += len(outputs)
        else:  # a watched output, an absent optional output (""), or a name defined before
            added += _add_outputs(scope, index, node, watch, plain, seen)
    if len(plain) + len(seen) != expected + added:  # a node wrote one name twice
        _refuse_repeated_output(scope)
    visible = (plain, seen) if scope.parent is None else inner  # a body may pass an outer tensor through
    for value in graph.output:
        name = value.name
        if not name or not any(name in names for names in visible):
            if name.__class__ is bytes:
                raise not_utf8_error()
            raise invalid(
                f"graph output {name!r} is not a graph input, initializer or node output "
                f"({where(scope.path)})"
            )
    check_text(plain)
    check_text(seen)


def _check_reads(
    scope: Scope, index: int, node: onnx.NodeProto, watch, defined: tuple[set[str], ...]
) -> None:
    """Record reads of watched names; raise for a name no visible graph defines yet."""
    for slot, name in enumerate(node.input):
        if name in watch:
            scope.reads.setdefault(name, []).append(Read(scope, index, slot))
        if any(name in names for names in defined):
            continue
        if name.__class__ is bytes:
            raise not_utf8_error()
        later = _produced_later(scope, index, name)
        why = (
            "which only this or a later node produces (a cycle, or nodes out of order)"
            if later
            else "which no node, graph input or initializer defines"
        )
        raise invalid(f"node {node_label(node, index)!r} of {where(scope.path)} reads {name!r}, {why}")


def _refuse_initializer_names(scope: Scope) -> None:
    names: set[str] = set()
    for tensor in scope.graph.initializer:
        if not tensor.name or tensor.name in names:
            raise invalid(
                f"an initializer of {where(scope.path)} is named {tensor.name!r}, "
                "like another one (or has no name)"
            )
        names.add(tensor.name)


def _produced_later(scope: Scope, index: int, name: str) -> bool:
    """Whether node ``index`` of ``scope`` or a later one (here or in an enclosing graph) writes ``name``."""
    current: Scope | None = scope
    while current is not None:
        if any(name in other.output for other in current.graph.node[index:]):
            return True
        index, current = current.holder_index or 0, current.parent
    return False


def _add_outputs(
    scope: Scope, index: int, node: onnx.NodeProto, watch, plain: set[str], seen: set[str]
) -> int:
    """Add the node's outputs one by one; return how many names were added."""
    added = 0
    for name in node.output:
        if not name:
            continue
        if name in plain or name in seen:
            raise invalid(
                f"tensor {name!r} of {where(scope.path)} is defined twice (node "
                f"{node_label(node, index)!r} writes it, "
                "and so does an earlier node, graph input or initializer)"
            )
        (seen if name in watch else plain).add(name)
        added += 1
        if name in watch:
            scope.produced.setdefault(name, index)
    return added


def _refuse_repeated_output(scope: Scope) -> None:
    for index, node in enumerate(scope.graph.node):
        outputs = [name for name in node.output if name]
        if len(set(outputs)) != len(outputs):
            raise invalid(f"node {node_label(node, index)!r} of {where(scope.path)} writes one tensor twice")
    raise AssertionError("name count mismatch without a repeated output")  # pragma: no cover


def _scan_children(
    scope: Scope, index: int, node: onnx.NodeProto, watch, outer: tuple[set[str], ...], depth: int
) -> None:
    label = node_label(node, index)
    for attr_name, sub in subgraph_attributes(node):
        child = Scope(sub, scope_path(scope.path, label, attr_name), parent=scope, holder_index=index)
        scope.children.append(child)
        _scan_graph(child, watch, outer, depth + 1)


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


@dataclass(frozen=True)
class StopSite:
    """A StopGradient node and the scope (graph) it sits in."""

    scope: Scope
    index: int
    node: onnx.NodeProto

    @property
    def label(self) -> str:
        return node_label(self.node, self.index)

    def readers(self) -> list[Read]:
        """Reads of the stop's output that see this stop's definition."""
        return resolved_reads(self.scope, self.node.output[0]) if self.node.output else []


class GraphIndex:
    """A validated model with the scopes of its graphs and the producers and readers of
    the names it watches; built once per model by :func:`scan`'s single walk."""

    def __init__(self, model: onnx.ModelProto, watch: Collection[str] = ()) -> None:
        self.model = model
        self.root = scan(model, watch)

    @classmethod
    def with_stops(cls, model: onnx.ModelProto) -> GraphIndex:
        """An index watching the outputs of every StopGradient (see :meth:`stops`)."""
        outputs = {
            out for node, _ in iter_nodes(model.graph) if is_stop_gradient(node) for out in node.output
        }
        return cls(model, outputs)

    def scopes(self) -> Iterator[Scope]:
        """The main graph's scope, then every subgraph's, depth first."""
        return iter_scopes(self.root)

    def stops(self) -> list[StopSite]:
        """Every StopGradient node of every graph, in walk order."""
        return [
            StopSite(scope, index, node)
            for scope in self.scopes()
            for index, node in enumerate(scope.graph.node)
            if is_stop_gradient(node)
        ]
