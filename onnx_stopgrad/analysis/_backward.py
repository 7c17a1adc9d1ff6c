"""Which forward nodes get a gradient node, read statically from the graph.

Mirrors how ONNX Runtime's gradient builder chooses: a node is differentiated when one
of its inputs is reachable from a parameter that requires a gradient AND one of its
outputs reaches the loss. Which inputs carry a gradient is the one rule of
:func:`onnx_stopgrad.graph.differentiable_inputs` (plus the outer tensors a node's
subgraphs read). With ``cut_stops`` StopGradient links are cut in both walks; without,
a StopGradient passes gradients like an Identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import onnx

from ..graph import carries_gradient, differentiable_inputs, free_names, is_stop_gradient, subgraphs

__all__ = ["BackwardPlan", "plan_backward"]


@dataclass(frozen=True)
class BackwardPlan:
    """Main-graph node indices that get a gradient, and per node the inputs that need one."""

    nodes: tuple[int, ...]
    grad_inputs: dict[int, tuple[str, ...]]


def _gradient_reads(node: onnx.NodeProto, types: Mapping[str, int], cut_stops: bool) -> list[str]:
    if is_stop_gradient(node):
        return (
            []
            if cut_stops or not node.input or not carries_gradient(node.input[0], types)
            else [node.input[0]]
        )
    reads = differentiable_inputs(node, types)
    for sub in subgraphs(node):
        reads.extend(name for name in free_names(sub) if carries_gradient(name, types))
    return list(dict.fromkeys(reads))


def plan_backward(
    graph: onnx.GraphProto,
    requires_grad: Iterable[str],
    targets: Iterable[str],
    types: Mapping[str, int],
    cut_stops: bool,
) -> BackwardPlan:
    """The gradient computation ORT would build for ``requires_grad`` and loss ``targets``."""
    inputs = [_gradient_reads(node, types, cut_stops) for node in graph.node]
    forward = set(requires_grad)
    for index, node in enumerate(graph.node):
        if any(name in forward for name in inputs[index]):
            forward.update(o for o in node.output if o and carries_gradient(o, types))
    backward = set(targets)
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if any(o in backward for o in node.output if o):
            backward.update(inputs[index])
    nodes: list[int] = []
    grad_inputs: dict[int, tuple[str, ...]] = {}
    for index, node in enumerate(graph.node):
        if (cut_stops and is_stop_gradient(node)) or not any(o in backward for o in node.output if o):
            continue
        needed = tuple(i for i in inputs[index] if i in forward and i in backward)
        if needed:
            nodes.append(index)
            grad_inputs[index] = needed
    return BackwardPlan(tuple(nodes), grad_inputs)
