"""Scale (or reverse) the gradient flowing back through a tensor, forward values unchanged.

``scale_gradient(model, "h", -0.3)`` puts a gradient-scale construct after ``h`` (see
:mod:`._constructs`) and makes ``h``'s readers, or only the ``consumers`` named, read
its output: the gradient reaching ``h`` through them is multiplied by the factor. A
factor of -1 (or -lambda) is a gradient-reversal layer; 0 inserts a plain StopGradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import onnx

from ..errors import ConstructError, TensorNotFoundError
from ..graph import is_stop_gradient, iter_nodes, node_label, validate
from . import _constructs as family
from ._model import ModelInput, open_model
from ._select import node_names, not_found_message, tensor_names
from .family_reports import ScaleReport
from .insert import insert_in_place

__all__ = ["scale_gradient", "scale_in_place"]


def scale_gradient(
    model: ModelInput, at: str, factor: float, consumers: Iterable[str] | None = None
) -> tuple[Any, ScaleReport]:
    """Multiply the gradient flowing back through tensor ``at`` by ``factor``; return ``(model, report)``.

    ``model`` is a ModelProto (copied, never changed), a path or an onnx-graphsurgeon
    Graph (returned as one). ``consumers`` limits the change to the edges into those nodes.
    """
    proto, back = open_model(model)
    report = scale_in_place(proto, at, factor, consumers)
    return back(proto), report


def scale_in_place(
    model: onnx.ModelProto, at: str, factor: float, consumers: Iterable[str] | None = None
) -> ScaleReport:
    """Like :func:`scale_gradient`, but changes ``model`` itself (nothing, on an error)."""
    validate(model)  # one-line errors for malformed graphs before anything else
    factor = float(factor)
    only = None if consumers is None else tuple(consumers)
    if not math.isfinite(factor):
        raise ConstructError(f"gradient factor {factor} is not a finite number; give one such as -0.3 or 0.1")
    if factor == 0:
        report = insert_in_place(model, at, {at: only} if only else None)
        if report.inserted:
            return ScaleReport(at, factor, stop=report.inserted[0], opset_added=report.opset_added)
        return ScaleReport(at, factor, skipped=report.skipped[0].reason if report.skipped else "")
    graph = model.graph
    producer = _producer(model, at)
    if factor == 1:
        return ScaleReport(at, factor, skipped="a factor of 1 leaves the gradient as it is")
    elem_type = family.check_float(model, at, "tensor")
    skip = set(family.members(model)) | {i for i, n in enumerate(graph.node) if is_stop_gradient(n)}
    direct, nested = family.node_readers(model, at, skip)
    chosen = _chosen(model, at, direct + nested, only)
    inside = [node_label(graph.node[i], i) for i in chosen if i in nested]
    if inside:
        raise ConstructError(
            f"node {inside[0]!r} reads {at!r} inside its subgraph; gradient scaling rewires "
            "main-graph readers only (scale a tensor the subgraph's node reads as an input)"
        )
    if not chosen:
        reason = "nothing reads it but StopGradient nodes or constructs (graph outputs keep their values)"
        return ScaleReport(at, factor, skipped=reason)
    prefix = family.allocate_prefix(model, at, family.SCALE)
    output = f"{prefix}/output"
    for index in chosen:
        node = graph.node[index]
        for slot, name in enumerate(node.input):
            if name == at:
                node.input[slot] = output
    position = 0 if producer is None else producer + 1
    for node in reversed(family.scale_nodes(prefix, at, output, factor, elem_type)):
        graph.node.insert(position, node)
    opset_added = family.ensure_opset(model)
    (info,) = family.describe(model, [c for c in family.find_constructs(model) if c.name == prefix])
    return ScaleReport(at, factor, construct=info, opset_added=opset_added)


def _producer(model: onnx.ModelProto, name: str) -> int | None:
    """Index of the main-graph node making ``name``; None for inputs and initializers."""
    graph = model.graph
    for index, node in enumerate(graph.node):
        if name in node.output:
            return index
    if any(v.name == name for v in graph.input) or any(t.name == name for t in graph.initializer):
        return None
    if any(name in node.output for node, _ in iter_nodes(graph)):
        raise ConstructError(
            f"tensor {name!r} lies inside a subgraph; gradient scaling works on the main graph"
        )
    for node in graph.node:
        if node.name == name and node.output:
            outputs = ", ".join(repr(out) for out in node.output if out)
            raise TensorNotFoundError(f"{name!r} is a node, not a tensor; its outputs are {outputs}")
    raise TensorNotFoundError(not_found_message("tensor", name, tensor_names(model)))


def _chosen(model: onnx.ModelProto, at: str, readers: list[int], only: tuple[str, ...] | None) -> list[int]:
    """The reader indices to rewire: all of them, or those named in ``only``."""
    graph = model.graph
    if only is None:
        return sorted(readers)
    labels = {node_label(graph.node[i], i): i for i in readers}
    chosen = []
    for name in only:
        if name in labels:
            chosen.append(labels[name])
        elif name in node_names(model):
            known = ", ".join(sorted(labels)) or "none"
            raise TensorNotFoundError(f"node {name!r} does not read tensor {at!r}; its readers are: {known}")
        else:
            raise TensorNotFoundError(not_found_message("node", name, node_names(model)))
    return sorted(set(chosen))
