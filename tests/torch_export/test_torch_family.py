"""onnx_stopgrad.torch's gradient_scale and straight_through in eager PyTorch and in export."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

import onnx

from onnx_stopgrad.errors import ConstructError
from onnx_stopgrad.passes import list_stop_gradients
from onnx_stopgrad.torch import export, gradient_scale, straight_through


def test_gradient_scale_in_eager_mode():
    x = torch.randn(3, 4, requires_grad=True)
    y = gradient_scale(x, -0.3)
    assert torch.equal(y, x)
    upstream = torch.randn(3, 4)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * -0.3)


def test_straight_through_in_eager_mode():
    x = torch.randn(3, 4, requires_grad=True)
    q = torch.round(x * 4) / 4
    y = straight_through(x, q)
    assert torch.equal(y, q)
    upstream = torch.randn(3, 4)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_helpers_refuse_bad_arguments():
    with pytest.raises(ConstructError, match="not a finite number"):
        gradient_scale(torch.ones(2), float("inf"))
    with pytest.raises(ConstructError, match="same shape and dtype"):
        straight_through(torch.ones(2, 3), torch.ones(3, 2))


class _WeightQuant(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc.weight
        return torch.nn.functional.linear(x, straight_through(w, torch.round(w * 8) / 8), self.fc.bias)


def test_folded_weight_quantizer_warns(tmp_path, caplog):
    """With constant folding, q is computed once at export: it would not follow the weight."""
    with caplog.at_level(logging.WARNING, logger="onnx_stopgrad"):
        export(_WeightQuant(), (torch.randn(2, 4),), tmp_path / "folded.onnx", do_constant_folding=True)
    assert "folded q into constants" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onnx_stopgrad"):
        export(
            _WeightQuant(), (torch.randn(2, 4),), tmp_path / "kept.onnx",
            do_constant_folding=False, training=torch.onnx.TrainingMode.TRAINING,
        )  # fmt: skip
    assert "folded" not in caplog.text
    (construct,) = list_stop_gradients(onnx.load(str(tmp_path / "kept.onnx"))).constructs
    assert construct.input == "fc.weight"
