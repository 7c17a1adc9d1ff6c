"""What a StopGradient costs and saves: frozen parameters, gradient-graph size, FLOPs, memory.

``analyze(model, at=...)`` returns an :class:`AnalysisReport` (``to_json()`` is the stable
form documented in docs/analyze-show.md). Nothing is written.
"""

from __future__ import annotations

from ._analyze import analyze
from ._report import (
    SCHEMA_VERSION,
    AnalysisReport,
    CostEstimate,
    GradientGraphSize,
    ModeInfo,
    NodeRef,
    ParameterInfo,
    ParameterTotals,
    StopInfo,
)

__all__ = [
    "SCHEMA_VERSION",
    "AnalysisReport",
    "CostEstimate",
    "GradientGraphSize",
    "ModeInfo",
    "NodeRef",
    "ParameterInfo",
    "ParameterTotals",
    "StopInfo",
    "analyze",
]
