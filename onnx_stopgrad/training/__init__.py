"""ONNX Runtime training with StopGradient: artifacts, loading, a small training loop.

``generate_artifacts`` is a drop-in for ``onnxruntime.training.artifacts.generate_artifacts``
whose gradient graph computes nothing behind a StopGradient; ``load`` opens the result
with the op library registered; ``fit`` trains on arrays named after the model's inputs;
``export_for_inference`` writes the trained model for inference. BatchNormalization and
Dropout behind the stops run in inference mode; ``RunningStatistics`` keeps the running
statistics of BatchNormalization nodes that train in training mode.
ONNX Runtime training (and torch, which it imports) load on first use.
"""

from __future__ import annotations

from ._artifacts import ArtifactsReport, generate_artifacts
from ._choices import LOSSES, OPTIMIZERS
from ._count import GRADIENT_NODE_MARK, count_gradient_nodes, is_gradient_node
from ._export import export_for_inference
from ._fixups import apply_fixups
from ._load import load
from ._loop import fit, read_npz
from ._modes import BATCHNORM_MODES, DROPOUT_MODES, NodeMode, mode_lines, plan_modes
from ._ort import ort_artifacts
from ._running import RunningStatistics
from ._weight_free import GradientGraph, UndifferentiableGraphError, build_gradient_graph

__all__ = [
    "BATCHNORM_MODES",
    "DROPOUT_MODES",
    "GRADIENT_NODE_MARK",
    "LOSSES",
    "OPTIMIZERS",
    "ArtifactsReport",
    "GradientGraph",
    "NodeMode",
    "RunningStatistics",
    "UndifferentiableGraphError",
    "apply_fixups",
    "build_gradient_graph",
    "count_gradient_nodes",
    "export_for_inference",
    "fit",
    "generate_artifacts",
    "is_gradient_node",
    "load",
    "mode_lines",
    "ort_artifacts",
    "plan_modes",
    "read_npz",
]
