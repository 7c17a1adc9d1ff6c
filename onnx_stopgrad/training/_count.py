"""What counts as a gradient node: the one definition used by training and ``analyze``.

ONNX Runtime's gradient builder adds two kinds of nodes to the forward graph: the
backward computation of each differentiated forward node, named
``<forward node>_Grad/<op>_<i>``, and one ``Sum`` named ``AccumulateGrad_<gradient>`` for
each tensor whose gradient arrives from several consumers. Both are backward-pass work,
so both count. Not counted: the forward and loss nodes, and the
``InPlaceAccumulatorV2`` nodes (``GradientAccumulator<i>``) that onnxblock adds after the
gradient graph to sum each trainable parameter's gradient across steps (one per
trainable parameter, whatever the graph).
"""

from __future__ import annotations

import onnx

__all__ = ["ACCUMULATE_GRAD_PREFIX", "GRADIENT_NODE_MARK", "count_gradient_nodes", "is_gradient_node"]

#: ORT names every node its gradient builder makes for a forward node ``<forward node>_Grad/<op>_<i>``.
GRADIENT_NODE_MARK = "_Grad/"
#: ORT names the Sum adding up the gradients of a tensor read more than once ``AccumulateGrad_<name>``.
ACCUMULATE_GRAD_PREFIX = "AccumulateGrad_"


def is_gradient_node(node: onnx.NodeProto) -> bool:
    """Whether ORT's gradient builder made ``node`` (see the module docstring)."""
    return GRADIENT_NODE_MARK in node.name or (
        node.op_type == "Sum" and node.name.startswith(ACCUMULATE_GRAD_PREFIX)
    )


def count_gradient_nodes(model: onnx.ModelProto | onnx.GraphProto) -> int:
    """Gradient nodes in a training model (or graph) built by ONNX Runtime."""
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    return sum(is_gradient_node(node) for node in graph.node)
