"""Exported detach -> ONNX Runtime training step: loss, gradients and update equal PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime.training")

from torch_export_cases import CASES, EXPORTERS, Case, build

from onnx_stopgrad import torch as sg_torch
from onnx_stopgrad.training import generate_artifacts, load

pytestmark = pytest.mark.training

LEARNING_RATE = 0.1


def assert_close(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    """1e-5 relative to the reference tensor's largest entry (float32 sums differ in order)."""
    scale = max(float(np.max(np.abs(reference))), 1e-12)
    error = float(np.max(np.abs(ours - reference))) if reference.size else 0.0
    assert error <= 1e-5 * scale, f"{what}: max error {error:.3g} vs scale {scale:.3g}"


def torch_step(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]):
    """PyTorch's loss, gradients (None behind detach) and SGD-updated weights."""
    module.zero_grad(set_to_none=True)
    loss = module(*inputs)
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    updated = {
        name: (p - LEARNING_RATE * p.grad).detach().numpy()
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    return loss.item(), grads, updated


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ort_training_step_matches_pytorch(case: Case, exporter: str, tmp_path: Path) -> None:
    module, inputs = build(case)
    dynamo = exporter == "dynamo"
    report = sg_torch.export(module, inputs, tmp_path / "model.onnx", dynamo=dynamo, verbose=False)
    reference_loss, reference_grads, updated = torch_step(module, inputs)
    expected_trainable = sorted(n for n, g in reference_grads.items() if g is not None)
    assert all((g is None) == name.startswith(case.frozen_prefixes) for name, g in reference_grads.items()), (
        "the case's frozen prefixes disagree with PyTorch"
    )

    # The dynamo exporter stores some constants as float initializers; name the weights.
    frozen = sorted(n for n, g in reference_grads.items() if g is None)
    artifacts = generate_artifacts(
        report.path,
        requires_grad=expected_trainable if dynamo else None,
        frozen_params=frozen if dynamo else None,
        loss=None,  # the module returns its loss
        optimizer="sgd",
        artifact_directory=tmp_path / "artifacts",
    )
    assert sorted(artifacts.trainable) == expected_trainable

    state, ort_module, optimizer = load(tmp_path / "artifacts")
    ort_module.train()
    loss = ort_module(*[t.numpy() for t in inputs])
    assert_close(np.asarray(loss), np.asarray(reference_loss), "loss")
    for name in expected_trainable:
        assert_close(state.parameters[name].grad, reference_grads[name].numpy(), f"grad {name}")

    optimizer.set_learning_rate(LEARNING_RATE)
    optimizer.step()
    for name in expected_trainable:
        assert_close(state.parameters[name].data, updated[name], f"updated {name}")
    assert len(artifacts.stops) == len(case.stopped_producers)
    for name in frozen:
        assert name in artifacts.frozen
        np.testing.assert_array_equal(
            state.parameters[name].data, dict(module.named_parameters())[name].detach().numpy()
        )


class _FrozenBackbonePredictor(torch.nn.Module):
    """Outputs predictions; the loss comes from generate_artifacts (ORT's MSELoss block)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.backbone = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return self.head(features.detach()) + 0.1 * features[:, :2]


def test_ort_training_with_generate_artifacts_loss(tmp_path: Path) -> None:
    module = _FrozenBackbonePredictor()
    gen = torch.Generator().manual_seed(4)
    x, target = torch.randn(5, 6, generator=gen), torch.randn(5, 2, generator=gen)
    report = sg_torch.export(module, (x,), tmp_path / "model.onnx", input_names=["x"])
    loss = torch.nn.functional.mse_loss(module(x), target)
    loss.backward()

    artifacts = generate_artifacts(
        report.path, loss="mse", optimizer="sgd", artifact_directory=tmp_path / "artifacts"
    )
    # backbone still trains through the skip term, only its detached use is cut
    assert sorted(artifacts.trainable) == sorted(n for n, _ in module.named_parameters())
    state, ort_module, _ = load(tmp_path / "artifacts")
    ort_module.train()
    ort_loss = ort_module(x.numpy(), target.numpy())
    assert_close(np.asarray(ort_loss), np.asarray(loss.item()), "loss")
    for name, parameter in module.named_parameters():
        assert_close(state.parameters[name].grad, parameter.grad.numpy(), f"grad {name}")
