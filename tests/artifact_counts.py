"""An independent count of the gradient nodes in ONNX Runtime training artifacts.

Shared by tests/training and tests/analysis as the reference the project's own count
(``onnx_stopgrad.training.count_gradient_nodes``) is checked against.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def backward_nodes(directory: Path) -> int:
    """Nodes of training_model.onnx that compute no tensor of the eval model (forward and
    loss; ORT may swap a forward node for a training variant, e.g. ConcatTraining) and are
    not onnxblock's per-parameter InPlaceAccumulatorV2: found by diffing the two models,
    not by ORT's node names."""
    training = onnx.load(str(directory / "training_model.onnx"))
    forward = onnx.load(str(directory / "eval_model.onnx"))
    computed = {name for n in forward.graph.node for name in n.output}
    return sum(
        not computed.intersection(n.output) and n.op_type != "InPlaceAccumulatorV2"
        for n in training.graph.node
    )
