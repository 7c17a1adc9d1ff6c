"""ONNX Runtime training with StopGradient: artifacts, loading, a small training loop.

``generate_artifacts`` is a drop-in for ``onnxruntime.training.artifacts.generate_artifacts``
whose gradient graph computes nothing behind a StopGradient; ``load`` opens the result
with the op library registered. ONNX Runtime training (and torch) are imported on first use.
"""

from __future__ import annotations

from ._artifacts import ArtifactsReport, count_gradient_nodes, generate_artifacts
from ._choices import LOSSES, OPTIMIZERS
from ._load import load

__all__ = ["ArtifactsReport", "generate_artifacts", "count_gradient_nodes", "load", "LOSSES", "OPTIMIZERS"]
