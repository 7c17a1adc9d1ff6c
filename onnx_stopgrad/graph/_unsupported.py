"""Models ONNX Runtime 1.19 cannot train at all, found before it is called.

Its gradient builder walks back from the loss and forward from the trainable
parameters, skipping only its own stop-gradient edges, and fails (checked on 1.19.2):

* at a node with subgraphs (If, Loop, Scan) whose bodies read tensors from outside, when
  the walk from the loss reaches it or the walk from the parameters reaches one of those
  tensors ("Attempting to get index by a name which does not exist"; for If it may abort
  the whole process);
* at a node with subgraphs one of whose inputs a parameter reaches while the loss
  reaches its output (no gradient builder for Loop/Scan);
* at an input it has no gradient builder for (``Pow``'s exponent) that a parameter
  reaches while the loss reaches the node's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import onnx

from ._differentiable import (
    NO_GRADIENT_BUILDER_INPUTS,
    ORT_STOP_GRADIENT_EDGES,
    carries_gradient,
    differentiable_inputs,
)
from ._walk import node_label, node_reads, subgraphs

__all__ = ["nodes_ort_cannot_differentiate"]


def nodes_ort_cannot_differentiate(
    graph: onnx.GraphProto, trainable: Iterable[str], targets: Iterable[str], types: Mapping[str, int]
) -> tuple[str, ...]:
    """``"'<node label>' (<why>)"`` for each main-graph node ORT 1.19 fails on when
    ``trainable`` train against a loss computed from ``targets`` (none when nothing trains)."""
    forward = set(trainable)
    if not forward:
        return ()
    backward = _reached_from_loss(graph, targets)
    found: list[str] = []
    for index, node in enumerate(graph.node):
        holder = bool(node.attribute) and any(True for _ in subgraphs(node))
        reads = node_reads(node) if holder else differentiable_inputs(node, types, ORT_STOP_GRADIENT_EDGES)
        reached = {name for name in reads if name in forward and carries_gradient(name, types)}
        needed = any(o in backward for o in node.output if o)
        if holder:
            outer = set(reads) - set(node.input)
            if (outer and needed) or reached & outer or (reached and needed):
                found.append(
                    f"{node_label(node, index)!r} "
                    f"(an {node.op_type}: no gradient passes a node with subgraphs)"
                )
        elif reached and needed and _reaches_unbuilt_input(node, forward):
            found.append(
                f"{node_label(node, index)!r} (a trainable parameter reaches the {node.op_type} exponent)"
            )
        if reached:
            forward.update(o for o in node.output if o and carries_gradient(o, types))
    return tuple(found)


def _reached_from_loss(graph: onnx.GraphProto, targets: Iterable[str]) -> set[str]:
    """Tensors ORT's walk back from the loss reaches: its own stop-gradient edges are the
    only ones skipped (element types are not looked at), and StopGradient cuts."""
    reached = set(targets)
    for node in reversed(graph.node):
        if any(o in reached for o in node.output if o):
            reached.update(differentiable_inputs(node, {}, ORT_STOP_GRADIENT_EDGES))
    return reached


def _reaches_unbuilt_input(node: onnx.NodeProto, forward: set[str]) -> bool:
    slots = (
        NO_GRADIENT_BUILDER_INPUTS.get(node.op_type, frozenset()) if node.domain in ("", "ai.onnx") else ()
    )
    return any(slot < len(node.input) and node.input[slot] in forward for slot in slots)
