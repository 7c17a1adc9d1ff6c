"""Count the gradient nodes of the training graph ONNX Runtime really builds.

Uses the two steps of ``onnxruntime.training``'s artifact generation that make the
training graph (``onnx_stopgrad.training.build_gradient_graph``: ``get_optimized_model``,
then ``GradientGraphBuilder``; the artifacts' removed count uses the same), on a copy of the
model whose loss is the sum of the target tensors. Weights are not needed: parameters
become typed graph inputs, as ORT itself does. StopGradient nodes are either cut (their
output becomes a graph input, which is how onnx-stopgrad's training builds artifacts) or
read as Identity (the model as if the stops were not there). What counts as a gradient
node is defined once, in ``onnx_stopgrad.training.is_gradient_node``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import helper

from .._ort119 import MAX_IR_VERSION, readable_ort_message
from ..graph import FLOAT_TYPES, is_stop_gradient, node_reads
from ..training import GRADIENT_NODE_MARK, UndifferentiableGraphError, is_gradient_node
from ._shapes import ShapeTable

__all__ = [
    "LOSS_NAME",
    "OrtGradientGraph",
    "UndifferentiableGraphError",
    "build_ort_gradient_graph",
    "ort_error_message",
    "ort_training_version",
]

log = logging.getLogger(__name__)

LOSS_NAME = "onnx_stopgrad_analysis_loss"


@dataclass(frozen=True)
class OrtGradientGraph:
    """What one gradient graph built by ONNX Runtime contains."""

    #: Nodes the gradient builder added (``onnx_stopgrad.training.count_gradient_nodes``).
    gradient_nodes: int
    forward_nodes: int
    #: Forward tensors (not parameters) that gradient nodes read: kept for backward.
    kept_activations: frozenset[str]
    #: Forward node names that got gradient nodes (from ORT's ``<name>_Grad/`` naming).
    differentiated: frozenset[str]


def ort_training_version() -> tuple[str | None, str | None]:
    """``(version, None)`` when ORT's training runtime imports, else ``(None, reason)``."""
    try:
        import onnxruntime
        from onnxruntime.capi import _pybind_state as state
    except ImportError as exc:
        return None, f"onnxruntime is not installed ({exc})"
    if not hasattr(state, "GradientGraphBuilder"):
        return None, (
            f"onnxruntime {onnxruntime.__version__} has no training runtime"
            "; install onnxruntime-training-cpu==1.19.2 for exact counts"
        )
    return onnxruntime.__version__, None


def _typed_input(name: str, elem_type: int, shape: Iterable[int] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def _training_input(
    model: onnx.ModelProto, targets: list[str], table: ShapeTable, cut_stops: bool
) -> onnx.ModelProto:
    """The forward model ORT is given: parameters as inputs, stops cut or Identity, a sum loss."""
    source = model.graph
    work = helper.make_model(helper.make_graph([], source.name or "g", [], []))
    work.ir_version = min(model.ir_version, MAX_IR_VERSION)
    del work.opset_import[:]
    work.opset_import.extend(model.opset_import)
    work.functions.extend(model.functions)
    graph = work.graph
    graph.input.extend(source.input)
    graph.value_info.extend(v for v in source.value_info)
    declared = {v.name for v in source.input}
    for tensor in source.initializer:
        if tensor.data_type in FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
            if tensor.name not in declared:
                graph.input.append(_typed_input(tensor.name, tensor.data_type, tensor.dims))
        else:
            graph.initializer.append(tensor)
    alias = {} if cut_stops else _stop_aliases(source)
    for node in source.node:
        if not is_stop_gradient(node):
            graph.node.append(node)
            if alias:
                graph.node[-1].input[:] = [alias.get(name, name) for name in node.input]
        elif cut_stops:
            info = table.get(node.output[0]) or table.get(node.input[0])
            elem = info.elem_type if info else onnx.TensorProto.FLOAT
            graph.input.append(_typed_input(node.output[0], elem, info.shape if info else None))
            # Keep the forward nodes behind the stop alive under their own names.
            graph.output.append(_typed_input(node.input[0], elem, info.shape if info else None))
        elif node.output[0] not in alias:  # read by a subgraph: kept under its name
            graph.node.append(helper.make_node("Identity", node.input[:1], node.output[:1], name=node.name))
    # ORT has no gradient for Sum: chain Adds over the per-target sums.
    total = ""
    for index, target in enumerate(targets):
        name = LOSS_NAME if len(targets) == 1 else f"{LOSS_NAME}_{index}"
        graph.node.append(
            helper.make_node("ReduceSum", [alias.get(target, target)], [name], keepdims=0, name=name)
        )
        if total:
            added = LOSS_NAME if index == len(targets) - 1 else f"{LOSS_NAME}_add{index}"
            graph.node.append(helper.make_node("Add", [total, name], [added], name=added))
            name = added
        total = name
    graph.output.insert(0, helper.make_tensor_value_info(LOSS_NAME, onnx.TensorProto.FLOAT, []))
    return work


def _stop_aliases(graph: onnx.GraphProto) -> dict[str, str]:
    """Stop output -> the tensor it copies, for removing the stops (chains followed).

    Removed, not made Identity: an Identity gets a gradient node of its own, which the
    model without stops does not have. Outputs a subgraph reads keep an Identity.
    """

    implicit = {name for node in graph.node for name in node_reads(node)} - {
        name for node in graph.node for name in node.input
    }
    alias: dict[str, str] = {}
    for node in graph.node:
        if is_stop_gradient(node) and node.output[0] not in implicit:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
    return alias


def ort_error_message(exc: BaseException) -> str:
    """The readable part of an ORT exception (see :func:`onnx_stopgrad._ort119.readable_ort_message`)."""
    return readable_ort_message(exc)


def build_ort_gradient_graph(
    model: onnx.ModelProto,
    requires_grad: Iterable[str],
    targets: Iterable[str],
    table: ShapeTable,
    cut_stops: bool,
) -> OrtGradientGraph:
    """Build the gradient graph with ONNX Runtime; raises RuntimeError when ORT refuses."""
    from ..training import apply_fixups, build_gradient_graph

    requires = sorted(set(requires_grad))
    work = _training_input(model, list(targets), table, cut_stops)
    apply_fixups(work)  # the same adjustments `onnx-stopgrad artifacts` makes for ORT 1.19
    if not requires:
        return OrtGradientGraph(0, len(work.graph.node), frozenset(), frozenset())
    built = build_gradient_graph(work, requires, LOSS_NAME)  # raises UndifferentiableGraphError
    optimized, trained = built.optimized, built.training
    forward_count = len(optimized.graph.node)
    gradient = [n for n in trained.graph.node if is_gradient_node(n)]
    produced = {name for n in optimized.graph.node for name in n.output}
    data_inputs = {i.name for i in optimized.graph.input} - {t.name for t in model.graph.initializer}
    forward_tensors = (produced | data_inputs) - {LOSS_NAME}
    kept = {name for n in gradient for name in n.input if name in forward_tensors}
    differentiated = {n.name.split(GRADIENT_NODE_MARK)[0] for n in gradient if GRADIENT_NODE_MARK in n.name}
    log.debug("ORT gradient graph: %d forward, %d gradient nodes", forward_count, len(gradient))
    return OrtGradientGraph(len(gradient), forward_count, frozenset(kept), frozenset(differentiated))
