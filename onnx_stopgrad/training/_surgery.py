"""Take StopGradient nodes out while ORT builds the gradient graph, then put them back.

ORT 1.19 ignores stop-gradient registrations for custom-domain ops, so the gradient
builder is shown a graph in which every stop reads a new *graph input* (through an
Identity, so the stop's output keeps its name even when it is a graph output): nothing
flows back into the stop's input, and nothing behind it is differentiated unless another
path reaches the loss. The stop's input is kept alive as a temporary graph output so the
forward nodes behind the stop survive ORT's graph optimisations under their names.
Afterwards the stops go back into the training and eval models.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import onnx

from .._names import DOMAIN, OPSET_VERSION
from ..errors import TrainingError
from ..graph import infer_types, is_stop_gradient, iter_node_sites, node_label, node_reads, subgraphs

__all__ = [
    "DetachedStop",
    "detach_stops",
    "keep_alive_names",
    "restore_stops",
    "toposort",
]


@dataclass(frozen=True)
class DetachedStop:
    """One StopGradient node taken out of the graph while gradients are built."""

    node: onnx.NodeProto
    label: str
    input: str
    output: str
    output_info: onnx.ValueInfoProto
    keep_alive: bool  # the input was exposed as a temporary graph output
    placeholder: str  # the temporary graph input standing in for the stop's output
    #: The initializer the stop reads, if it reads one: ORT drops an initializer nothing
    #: else reads (a stop whose output is unused), and it is put back with the stop.
    initializer: onnx.TensorProto | None = None


def detach_stops(
    model: onnx.ModelProto, *, in_place: bool = False
) -> tuple[onnx.ModelProto, list[DetachedStop]]:
    """A copy of ``model`` (or ``model`` itself, ``in_place``) where each StopGradient is
    ``Identity(new graph input)``."""
    _refuse_stops_in_subgraphs(model.graph)
    detached = model if in_place else copy.deepcopy(model)
    graph = detached.graph
    types = infer_types(detached)
    taken = _defined_names(graph) | {v.name for v in graph.value_info}
    sources = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    initializers = {t.name: t for t in graph.initializer}
    stops: list[DetachedStop] = []
    for index, node in enumerate(graph.node):
        if not is_stop_gradient(node):
            continue
        label = node_label(node, index)
        src, dst = node.input[0], node.output[0]
        tensor_type = types.get(dst) or types.get(src)
        if tensor_type is None:
            raise TrainingError(
                f"cannot tell the element type of {src!r} at StopGradient {label!r}; "
                "run onnx.shape_inference on the model or add a value_info for it"
            )
        placeholder = _unique(f"{dst}.detached", taken)
        taken.add(placeholder)
        graph.input.append(onnx.helper.make_value_info(placeholder, tensor_type))
        info = onnx.helper.make_value_info(dst, tensor_type)
        keep_alive = src not in sources
        if keep_alive and src not in {v.name for v in graph.value_info}:
            graph.value_info.append(onnx.helper.make_value_info(src, types.get(src) or tensor_type))
        stops.append(
            DetachedStop(
                copy.deepcopy(node), label, src, dst, info, keep_alive, placeholder, initializers.get(src)
            )
        )
        node.CopyFrom(onnx.helper.make_node("Identity", [placeholder], [dst], name=f"{label}.detached"))
    return detached, stops


def _unique(name: str, taken: set[str]) -> str:
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    return candidate


def keep_alive_names(stops: Iterable[DetachedStop]) -> list[str]:
    """Stop inputs to expose as temporary outputs while gradients are built."""
    return list(dict.fromkeys(s.input for s in stops if s.keep_alive))


def restore_stops(
    model: onnx.ModelProto,
    stops: list[DetachedStop],
    temporary_outputs: Iterable[str],
    *,
    portable: bool = False,
) -> None:
    """Put the stops back into a model ORT built, and drop the temporary inputs/outputs.

    ORT may have removed the stand-in Identity and read the placeholder directly, also in
    gradient nodes; those reads go back to the stop's output (same value). ``portable``
    puts each stop back as a plain ``Identity`` (same name, input and output): the
    gradient graph is already built, so the model trains the same and needs no op library.
    """
    graph = model.graph
    back = {s.placeholder: s.output for s in stops}
    stand_ins = {f"{s.label}.detached" for s in stops}
    temporary = set(temporary_outputs)
    _keep(graph.input, lambda v: v.name not in back)
    _keep(graph.output, lambda v: v.name not in temporary)
    _keep(graph.node, lambda n: not (n.op_type == "Identity" and n.name in stand_ins))
    for node in graph.node:
        node.input[:] = [back.get(name, name) for name in node.input]
    known = _defined_names(graph) | {s.output for s in stops}
    described = {v.name for v in graph.value_info}
    for stop in stops:
        if stop.input not in known and stop.initializer is not None:
            graph.initializer.append(copy.deepcopy(stop.initializer))
            known.add(stop.input)
        if stop.input not in known:
            raise TrainingError(
                f"ONNX Runtime removed {stop.input!r}, the input of StopGradient {stop.label!r}, "
                "while building the gradient graph; please report this with the model"
            )
        if portable:
            identity = onnx.helper.make_node("Identity", [stop.input], [stop.output], name=stop.node.name)
            graph.node.append(identity)
        else:
            graph.node.append(copy.deepcopy(stop.node))
        if stop.output not in described:
            graph.value_info.append(copy.deepcopy(stop.output_info))
    if portable:
        _drop_unused_domain(model)
    elif stops and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))
    toposort(graph)


def _drop_unused_domain(model: onnx.ModelProto) -> None:
    """Remove the op library's opset import when no node of the main graph uses it."""
    if not any(node.domain == DOMAIN for node in model.graph.node):
        _keep(model.opset_import, lambda o: o.domain != DOMAIN)


def _keep(field: Any, wanted: Callable[[Any], bool]) -> None:
    """Keep the items of a repeated protobuf field for which ``wanted(item)`` is true."""
    kept = [copy.deepcopy(item) for item in field if wanted(item)]
    del field[:]
    field.extend(kept)


def toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` so producers come first, keeping the given order where valid.

    Kahn's algorithm with the ready nodes taken in their original order (a heap): linear
    in the graph's size up to the heap's log factor.
    """
    available = _graph_sources(graph)
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name:
                producer.setdefault(name, index)
    waiting = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    missing: set[str] = set()
    for index, node in enumerate(nodes):
        for name in set(node_reads(node)) - available:
            source = producer.get(name)
            if source is None:
                missing.add(name)
                waiting[index] += 1  # never becomes ready
            else:
                readers[source].append(index)
                waiting[index] += 1
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for reader in readers[index]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) != len(nodes):
        names = sorted(missing) or sorted(
            {o for i, n in enumerate(nodes) if waiting[i] for o in n.output if o}
        )
        raise TrainingError(f"the graph has a cycle or undefined tensors ({', '.join(names[:3])})")
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def _graph_sources(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    names.update(s.values.name for s in graph.sparse_initializer)
    names.add("")
    return names


def _defined_names(graph: onnx.GraphProto) -> set[str]:
    names = _graph_sources(graph)
    for node in graph.node:
        names.update(node.output)
    return names


def _refuse_stops_in_subgraphs(graph: onnx.GraphProto) -> None:
    for site in iter_node_sites(graph):
        for sub in subgraphs(site.node):
            if any(is_stop_gradient(n) for n in sub.node):
                raise TrainingError(
                    f"a StopGradient inside the subgraph of {site.label!r} is "
                    "not supported for training; move it into the main graph"
                )
