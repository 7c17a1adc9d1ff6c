"""Which forward nodes get a gradient node, read statically from the graph.

Mirrors how ONNX Runtime's gradient builder chooses: a node is differentiated when one
of its inputs is reachable from a parameter that requires a gradient AND one of its
outputs reaches the loss. Only floating-point tensors carry gradients; tensors of
unknown type are assumed to. With ``cut_stops`` StopGradient links are cut in both walks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from .._flow import FLOAT_TYPES, is_stop_gradient, node_reads
from ._shapes import ShapeTable

__all__ = ["BackwardPlan", "plan_backward"]


@dataclass(frozen=True)
class BackwardPlan:
    """Main-graph node indices that get a gradient, and per node the inputs that need one."""

    nodes: tuple[int, ...]
    grad_inputs: dict[int, tuple[str, ...]]


def _differentiable(name: str, table: ShapeTable) -> bool:
    info = table.get(name)
    return info is None or info.elem_type in FLOAT_TYPES


def plan_backward(
    graph: onnx.GraphProto,
    requires_grad: Iterable[str],
    targets: Iterable[str],
    table: ShapeTable,
    cut_stops: bool,
) -> BackwardPlan:
    """The gradient computation ORT would build for ``requires_grad`` and loss ``targets``."""
    inputs = [node_reads(node) for node in graph.node]
    cut = [cut_stops and is_stop_gradient(node) for node in graph.node]
    forward = set(requires_grad)
    for index, node in enumerate(graph.node):
        if not cut[index] and any(name in forward for name in inputs[index]):
            forward.update(o for o in node.output if o and _differentiable(o, table))
    backward = set(targets)
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if not cut[index] and any(o in backward for o in node.output if o):
            backward.update(i for i in inputs[index] if _differentiable(i, table))
    nodes: list[int] = []
    grad_inputs: dict[int, tuple[str, ...]] = {}
    for index, node in enumerate(graph.node):
        if cut[index] or not any(o in backward for o in node.output if o):
            continue
        needed = tuple(i for i in inputs[index] if i in forward and i in backward)
        if needed:
            nodes.append(index)
            grad_inputs[index] = needed
    return BackwardPlan(tuple(nodes), grad_inputs)
