"""The QAT and VQ-VAE examples (examples/qat_digits.py, examples/vqvae_digits.py) run and hold.

QAT: ONNX Runtime trains the fake-quantized MLP, through straight-through constructs, to
within 2 accuracy points of the float MLP trained the same way. VQ-VAE: the ONNX Runtime
loss curve equals the PyTorch run's step for step (1e-5 relative) and goes down.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
pytest.importorskip("sklearn")

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_qat_digits_within_two_points_of_float(tmp_path):
    result = _load("qat_digits").run(tmp_path, epochs=30)
    assert result.constructs == 3
    assert result.float_accuracy > 0.9
    assert result.gap_points <= 2.0, result


def test_vqvae_digits_onnxruntime_follows_pytorch(tmp_path):
    curves = _load("vqvae_digits").run(tmp_path, steps=60)
    ort_curve, torch_curve = np.array(curves.onnxruntime), np.array(curves.pytorch)
    np.testing.assert_allclose(ort_curve, torch_curve, rtol=1e-5)
    assert ort_curve[-10:].mean() < 0.95 * ort_curve[:10].mean()  # it learns
