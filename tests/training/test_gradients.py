"""ORT training with StopGradient against PyTorch autograd with ``.detach()``.

Five models (tests/training/training_cases.py), each built by hand and by
torch.onnx.export: loss and gradients to 1e-5 relative, the exact trainable set, three
AdamW steps to 1e-4, and no gradient node for what lies behind a stop.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from artifact_counts import backward_nodes
from training_cases import CASES, by_export, by_helper
from training_reference import ort_run, ort_without_stops, torch_run

from onnx_stopgrad.training import count_gradient_nodes, generate_artifacts

pytestmark = pytest.mark.training

BUILDERS = {"helper": by_helper, "export": by_export}


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return CASES[request.param]


@pytest.mark.parametrize("how", sorted(BUILDERS))
def test_matches_pytorch_detach(case, how, tmp_path):
    torch.manual_seed(0)
    module = case.make()
    model = BUILDERS[how](case, module)
    report = generate_artifacts(model, loss=case.loss, optimizer="adamw", artifact_directory=tmp_path / "a")

    assert set(report.trainable) == case.expected_trainable
    params = {t.name for t in model.graph.initializer}
    assert set(report.frozen) == (params - case.expected_trainable)

    inputs, label = case.inputs(), case.label()
    (ort_loss, ort_grads), ort_params = ort_run(tmp_path / "a", inputs, label)
    (ref_loss, ref_grads), ref_params = torch_run(
        copy.deepcopy(module), case, inputs, label, report.trainable
    )

    assert abs(ort_loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert set(ort_grads) == case.expected_trainable
    for name, expected in ref_grads.items():
        assert ort_grads[name].shape == expected.shape
        assert _relative(ort_grads[name], expected) <= 1e-5, name
    for name, expected in ref_params.items():
        np.testing.assert_allclose(ort_params[name], expected, rtol=0, atol=1e-4, err_msg=name)
        assert not np.array_equal(ort_params[name], module.state_dict()[name].numpy()), f"{name} did not move"


def test_stopped_branch_has_no_gradient_node(case, tmp_path):
    """Hand-built graphs name nodes after modules: no ``<stopped module>*_Grad/*`` node exists."""
    torch.manual_seed(0)
    model = by_helper(case, case.make())
    report = generate_artifacts(model, loss=case.loss, optimizer="adamw", artifact_directory=tmp_path)
    training = onnx.load(str(tmp_path / "training_model.onnx"))
    grad_nodes = [n.name for n in training.graph.node if "_Grad/" in n.name]
    assert report.gradient_nodes == backward_nodes(tmp_path) == count_gradient_nodes(training)
    for module in case.stopped_modules:
        behind = [n for n in grad_nodes if n.startswith(module)]
        assert not behind, f"gradient nodes behind the stop: {behind}"
    assert not [n for n in grad_nodes if n.startswith("stop")]
    # Without the stops ORT differentiates more: the count matches ORT's own function on the
    # model with the stops removed, all parameters trainable.
    params = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    without = ort_without_stops(model, params, case.loss, tmp_path / "ort_without")
    assert report.gradient_nodes_without_stops == without
    assert report.gradient_nodes_removed == without - report.gradient_nodes > 0
    # The stops are in both models, so they run (with the library) like the source model.
    for kind in ("training", "eval"):
        built = onnx.load(str(tmp_path / f"{kind}_model.onnx"))
        assert [n.name for n in built.graph.node if n.op_type == "StopGradient"] == list(report.stops)
        assert built.ir_version <= 10
    assert onnx.load(str(tmp_path / "optimizer_model.onnx")).ir_version <= 10
