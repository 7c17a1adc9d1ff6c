"""Deprecated alias: the gradient-flow analysis and the subgraph walks live in
:mod:`onnx_stopgrad.graph` (``_gradient_flow``, ``_walk``). Nothing in the package imports
this module; it only keeps older imports working. Import from ``onnx_stopgrad.graph``."""

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
