"""Take StopGradient nodes out again, so the model runs without the op library.

Gradient-scale and straight-through constructs go as one unit each: their readers read
the original tensor again and the graph is as it was before (see ``_constructs``).
Each other removed node's readers are rewired to the node's input. A StopGradient whose output
is a graph output (its name must survive) becomes an Identity instead; ``to_identity``
turns every selected node into an Identity. The custom opset import is dropped once no
node of the domain is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx

from .._names import DOMAIN
from ..errors import TensorNotFoundError
from ..graph import GraphIndex, Read, Scope, StopSite, iter_nodes
from . import _constructs
from ._model import ModelInput, open_model
from ._select import not_found_message
from .reports import Removal, RemoveReport

__all__ = [
    "StopSite",
    "find_stops",
    "readers_of",
    "remove_in_place",
    "remove_stop_gradient",
    "stops_outside_constructs",
]


def find_stops(model: onnx.ModelProto) -> tuple[Scope, list[StopSite]]:
    """Every StopGradient node of every graph, with the index's root scope."""
    index = GraphIndex.with_stops(model)
    return index.root, index.stops()


def readers_of(stop: StopSite) -> list[Read]:
    """Reads of the stop's output that see this stop's definition."""
    return stop.readers()


def remove_stop_gradient(
    model: ModelInput, at: str | Sequence[str] | None = None, to_identity: bool = False
) -> tuple[Any, RemoveReport]:
    """Remove all StopGradient nodes, or those named in ``at``; return ``(model, report)``.

    ``at`` may name the node, its input tensor or its output tensor; for a construct,
    its name (node-name prefix), one of its nodes or its output.
    """
    proto, back = open_model(model)
    report = remove_in_place(proto, at, to_identity)
    return back(proto), report


def remove_in_place(
    model: onnx.ModelProto, at: str | Sequence[str] | None = None, to_identity: bool = False
) -> RemoveReport:
    """Like :func:`remove_stop_gradient`, but changes ``model`` itself."""
    _, every_stop = find_stops(model)  # checks the model's structure first
    constructs = _constructs.find_constructs(model)
    stops = stops_outside_constructs(every_stop, constructs)
    chosen, chosen_constructs = _choose(stops, at, constructs)
    keys = {(stop.scope.path, stop.node.output[0]) for stop in chosen}
    removals: list[Removal] = []
    for construct, labels in _constructs.take_out(model, chosen_constructs):
        what = construct.kind.replace("_", " ")
        if construct.kind == _constructs.SCALE:
            what += f" by {construct.factor:g}"
        removals.append(
            Removal(construct.name, construct.original, construct.output, labels, "", False, what)
        )
    if chosen_constructs:  # node indices moved: find the chosen stops again
        chosen = [stop for stop in find_stops(model)[1] if (stop.scope.path, stop.node.output[0]) in keys]
    doomed: dict[int, tuple[Scope, list[int]]] = {}
    for stop in chosen:
        node = stop.node
        source, output = node.input[0], node.output[0]
        reads = readers_of(stop)
        labels = tuple(dict.fromkeys(read.label for read in reads))
        is_graph_output = any(value.name == output for value in stop.scope.graph.output)
        if to_identity or is_graph_output:
            reason = "" if to_identity else "its output is a graph output, whose name is kept"
            removals.append(Removal(stop.label, source, output, labels, stop.scope.path, True, reason))
            node.op_type, node.domain = "Identity", ""
            del node.attribute[:]
            continue
        removals.append(Removal(stop.label, source, output, labels, stop.scope.path))
        for read in reads:
            read.rewire(source)
        doomed.setdefault(id(stop.scope), (stop.scope, []))[1].append(stop.index)
        _drop_value_info(stop.scope.graph, output)
    for scope, indices in doomed.values():
        for index in sorted(indices, reverse=True):
            del scope.graph.node[index]
    opset_removed = bool(removals) and _drop_opset_if_unused(model)
    return RemoveReport(tuple(removals), opset_removed)


def stops_outside_constructs(
    stops: list[StopSite], constructs: list[_constructs.Construct]
) -> list[StopSite]:
    """The stops that are not part of a construct (those sit in the main graph)."""
    inside = {index for construct in constructs for index in construct.nodes}
    return [stop for stop in stops if stop.scope.parent is not None or stop.index not in inside]


def _choose(
    stops: list[StopSite], at: str | Sequence[str] | None, constructs: list[_constructs.Construct]
) -> tuple[list[StopSite], list[_constructs.Construct]]:
    if at is None:
        return stops, constructs
    names = [at] if isinstance(at, str) else list(at)
    chosen: dict[int, StopSite] = {}
    units: dict[str, _constructs.Construct] = {}
    for name in names:
        hits = [s for s in stops if name in (s.label, s.node.input[0], s.node.output[0])]
        groups = [
            c
            for c in constructs
            if name in (c.name, c.output, c.input, c.quantized) or name.startswith(c.name + "/")
        ]
        if not hits and not groups:
            known = [s.label for s in stops] + [s.node.input[0] for s in stops] + [c.name for c in constructs]
            if not stops and not constructs:
                raise TensorNotFoundError(f"no StopGradient at {name!r}: the model has none")
            raise TensorNotFoundError(not_found_message("StopGradient at", name, known))
        chosen.update((id(hit.node), hit) for hit in hits)
        units.update((c.name, c) for c in groups)
    return list(chosen.values()), list(units.values())


def _drop_value_info(graph: onnx.GraphProto, name: str) -> None:
    for index in reversed(range(len(graph.value_info))):
        if graph.value_info[index].name == name:
            del graph.value_info[index]


def _drop_opset_if_unused(model: onnx.ModelProto) -> bool:
    if any(node.domain == DOMAIN for node, _ in iter_nodes(model.graph)):
        return False
    if any(node.domain == DOMAIN for function in model.functions for node in function.node):
        return False
    for index, opset in enumerate(model.opset_import):
        if opset.domain == DOMAIN:
            del model.opset_import[index]
            return True
    return False
