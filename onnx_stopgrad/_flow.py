"""Former home of the gradient-flow analysis and the subgraph walks; both now live in
:mod:`onnx_stopgrad.graph`. Kept so existing imports keep working."""

from __future__ import annotations

from .graph import (
    FLOAT_TYPES,
    MAX_DEPTH,
    GradientFlow,
    analyze_gradient_flow,
    is_stop_gradient,
    iter_nodes,
    node_label,
    node_reads,
    not_utf8_error,
    too_deep_error,
)

__all__ = [
    "MAX_DEPTH",
    "too_deep_error",
    "not_utf8_error",
    "GradientFlow",
    "analyze_gradient_flow",
    "is_stop_gradient",
    "node_reads",
    "iter_nodes",
    "node_label",
    "FLOAT_TYPES",
]
