"""Take StopGradient nodes out while ORT builds the gradient graph, then put them back.

ORT 1.19 ignores stop-gradient registrations for custom-domain ops, so the gradient
builder is shown a graph in which every stop's output is a *graph input*: nothing
flows back through it, and nothing behind it is differentiated unless another path
reaches the loss. The stop's input is kept alive as a temporary graph output so the
forward nodes behind the stop survive ORT's graph optimisations under their names.
Afterwards the stops go back into the training and eval models.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from .._flow import is_stop_gradient, node_label
from .._names import DOMAIN, OPSET_VERSION
from ..errors import TrainingError

__all__ = [
    "DetachedStop",
    "detach_stops",
    "keep_alive_names",
    "restore_stops",
    "stops_to_identity",
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


def detach_stops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[DetachedStop]]:
    """A copy of ``model`` with each StopGradient's output turned into a graph input."""
    _refuse_stops_in_subgraphs(model.graph)
    detached = copy.deepcopy(model)
    graph = detached.graph
    types = _known_types(detached)
    sources = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    stops: list[DetachedStop] = []
    kept: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if not is_stop_gradient(node):
            kept.append(node)
            continue
        label = node_label(node, index)
        src, dst = node.input[0], node.output[0]
        tensor_type = types.get(dst) or types.get(src)
        if tensor_type is None:
            raise TrainingError(
                f"cannot tell the element type of {src!r} at StopGradient {label!r}; "
                "run onnx.shape_inference on the model or add a value_info for it"
            )
        info = onnx.ValueInfoProto(name=dst)
        info.type.CopyFrom(tensor_type)
        keep_alive = src not in sources
        if keep_alive and src not in {v.name for v in graph.value_info}:
            src_info = onnx.ValueInfoProto(name=src)
            src_info.type.CopyFrom(types.get(src) or tensor_type)
            graph.value_info.append(src_info)
        graph.input.append(info)
        sources.add(dst)
        stops.append(DetachedStop(copy.deepcopy(node), label, src, dst, info, keep_alive))
    del graph.node[:]
    graph.node.extend(kept)
    stop_outputs = {s.output for s in stops}
    infos = [v for v in graph.value_info if v.name not in stop_outputs]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return detached, stops


def keep_alive_names(stops: Iterable[DetachedStop]) -> list[str]:
    """Stop inputs to expose as temporary outputs while gradients are built."""
    return list(dict.fromkeys(s.input for s in stops if s.keep_alive))


def restore_stops(
    model: onnx.ModelProto, stops: list[DetachedStop], temporary_outputs: Iterable[str]
) -> None:
    """Put the stops back into a model ORT built, and drop the temporary inputs/outputs."""
    graph = model.graph
    stop_outputs = {s.output for s in stops}
    temporary = set(temporary_outputs)
    inputs = [i for i in graph.input if i.name not in stop_outputs]
    del graph.input[:]
    graph.input.extend(inputs)
    outputs = [o for o in graph.output if o.name not in temporary]
    del graph.output[:]
    graph.output.extend(outputs)
    known = _defined_names(graph)
    for stop in stops:
        if stop.input not in known:
            raise TrainingError(
                f"ONNX Runtime removed {stop.input!r}, the input of StopGradient {stop.label!r}, "
                "while building the gradient graph; please report this with the model"
            )
        graph.node.append(copy.deepcopy(stop.node))
        graph.value_info.append(copy.deepcopy(stop.output_info))
    if stops and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))
    toposort(graph)


def stops_to_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` where every StopGradient is an Identity (gradients pass)."""
    plain = copy.deepcopy(model)
    for node in plain.graph.node:
        if is_stop_gradient(node):
            node.op_type, node.domain = "Identity", ""
            del node.attribute[:]
    return plain


def toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` so producers come first, keeping the given order where valid."""
    available = _graph_sources(graph)
    pending = list(graph.node)
    needs = [set(_node_reads(node)) - available for node in pending]
    ordered: list[onnx.NodeProto] = []
    done = [False] * len(pending)
    progress = True
    while progress and len(ordered) < len(pending):
        progress = False
        for index, node in enumerate(pending):
            if done[index] or not needs[index] <= available:
                continue
            done[index] = True
            ordered.append(node)
            available.update(o for o in node.output if o)
            progress = True
    if len(ordered) != len(pending):
        missing = sorted(set().union(*(n for n, d in zip(needs, done) if not d)) - available)
        raise TrainingError(f"the graph has a cycle or undefined tensors ({', '.join(missing[:3])})")
    del graph.node[:]
    graph.node.extend(ordered)


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


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Inputs of ``node`` plus outer-scope names its subgraphs read."""
    reads = [name for name in node.input if name]
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subs:
            reads.extend(_free_names(sub))
    return reads


def _free_names(graph: onnx.GraphProto) -> set[str]:
    defined = _graph_sources(graph)
    free: set[str] = set()
    for node in graph.node:
        free.update(n for n in _node_reads(node) if n not in defined)
        defined.update(node.output)
    free.update(o.name for o in graph.output if o.name not in defined)
    return free


def _known_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best effort: fall back to what the model declares
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type for v in [*graph.value_info, *graph.input, *graph.output]}
    for tensor in graph.initializer:
        types.setdefault(
            tensor.name, onnx.helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
        )
    return {name: t for name, t in types.items() if t.tensor_type.elem_type}


def _refuse_stops_in_subgraphs(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                if any(is_stop_gradient(n) for n in sub.node):
                    raise TrainingError(
                        f"a StopGradient inside the subgraph of {node.name or node.op_type!r} is "
                        "not supported for training; move it into the main graph"
                    )
                _refuse_stops_in_subgraphs(sub)
