"""Quantization-aware training on scikit-learn's digits with ONNX Runtime and straight-through.

An MLP (64 -> 64 -> 10) whose weights (5-bit, per tensor) and hidden activations
(8-bit) are fake-quantized: ``clip(round(x / s) * s, -a, a)``. Round has no gradient, so
ONNX Runtime cannot train the exported model as it is. The example

1. exports the float MLP and the fake-quantized MLP with PyTorch (no gradient tricks),
2. wraps each fake-quantize chain (``Div .. Clip``) in a straight-through construct with
   ``onnx_stopgrad.passes.straight_through``: forward values stay the quantized ones,
   the gradient reaches the weights and activations as if the chain were the identity,
3. trains both models with ONNX Runtime (same data, seed, optimizer and steps),
4. exports each for inference without the constructs and prints the test accuracies.

The quantized model lands within 2 accuracy points of the float one. Runs in seconds;
``--epochs`` changes the length. Outputs go to ``out/qat_digits/`` (``--out``).
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import onnx
import onnxruntime as ort
import torch

from onnx_stopgrad.passes import list_stop_gradients, straight_through
from onnx_stopgrad.training import export_for_inference, fit, generate_artifacts

__all__ = ["QuantMLP", "Result", "fake_quant_chains", "load_digits_split", "main", "run"]

WEIGHT_LEVELS = 15  # 5-bit signed weights: -15 s .. 15 s
WEIGHT_HEADROOM = 4.0  # the clip range is 4x the initial largest weight: weights grow as they train
ACTIVATION_STEP, ACTIVATION_MAX = 4.0 / 255, 4.0  # 8-bit unsigned activations


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 pixels in [0, 1], labels int64; 80 % train, 20 % test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


class FakeQuant(torch.nn.Module):
    def __init__(self, step: float, limit: float) -> None:
        super().__init__()
        self.step, self.limit = step, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(x / self.step) * self.step, -self.limit, self.limit)


class QuantMLP(torch.nn.Module):
    """64 -> 64 -> 10; with ``quantize`` the weights and hidden activations are fake-quantized."""

    def __init__(self, quantize: bool) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 64)
        self.fc2 = torch.nn.Linear(64, 10)
        self.quantize = quantize
        if quantize:
            limits = [WEIGHT_HEADROOM * float(fc.weight.detach().abs().max()) for fc in (self.fc1, self.fc2)]
            self.wq1 = FakeQuant(limits[0] / WEIGHT_LEVELS, limits[0])
            self.wq2 = FakeQuant(limits[1] / WEIGHT_LEVELS, limits[1])
            self.aq = FakeQuant(ACTIVATION_STEP, ACTIVATION_MAX)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantize:
            return self.fc2(torch.relu(self.fc1(x)))
        h = self.aq(torch.relu(torch.nn.functional.linear(x, self.wq1(self.fc1.weight), self.fc1.bias)))
        return torch.nn.functional.linear(h, self.wq2(self.fc2.weight), self.fc2.bias)


def export(module: torch.nn.Module) -> onnx.ModelProto:
    """TorchScript export in training mode, no constant folding (the quantizers must stay)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.zeros(1, 64),), buffer, input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False, opset_version=17,
            training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = min(model.ir_version, 10)  # ONNX Runtime 1.19 training
    return model


def fake_quant_chains(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(first, last) node of each exported FakeQuant: ``/wq1/Div`` .. ``/wq1/Clip``."""
    chains = []
    for scope in ("/wq1/", "/aq/", "/wq2/"):
        names = [n.name for n in model.graph.node if n.name.startswith(scope)]
        chains.append(
            (next(n for n in names if n.endswith("/Div")), next(n for n in names if n.endswith("/Clip")))
        )
    return chains


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(path))  # constructs removed: any ONNX Runtime runs it
    logits = session.run(None, {"x": x})[0]
    return float((logits.argmax(1) == y).mean())


def train(model: onnx.ModelProto, directory: Path, data: dict[str, np.ndarray], epochs: int) -> Path:
    generate_artifacts(
        model, loss="crossentropy", optimizer="adamw", artifact_directory=directory, measure_removed=False
    )
    fit(directory, data, epochs=epochs, batch_size=32, learning_rate=0.01, seed=0)
    return export_for_inference(directory, directory / "inference.onnx", keep_stops=False)


@dataclass(frozen=True)
class Result:
    float_accuracy: float
    qat_accuracy: float
    constructs: int

    @property
    def gap_points(self) -> float:
        return 100 * (self.float_accuracy - self.qat_accuracy)


def run(out: Path, epochs: int = 30) -> Result:
    x_train, y_train, x_test, y_test = load_digits_split()
    data = {"x": x_train, "labels": y_train}
    torch.manual_seed(0)
    float_module = QuantMLP(quantize=False)
    qat_module = QuantMLP(quantize=True)
    qat_module.load_state_dict(float_module.state_dict())  # same start

    float_model = export(float_module)
    qat_model = export(qat_module)
    for first, last in fake_quant_chains(qat_model):
        qat_model, report = straight_through(qat_model, first, last)
        print(report.summary())
    constructs = len(list_stop_gradients(qat_model).constructs)

    out.mkdir(parents=True, exist_ok=True)
    float_path = train(float_model, out / "float", data, epochs)
    qat_path = train(qat_model, out / "qat", data, epochs)
    return Result(accuracy(float_path, x_test, y_test), accuracy(qat_path, x_test, y_test), constructs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "qat_digits")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    result = run(args.out, args.epochs)
    print(f"float model:      {100 * result.float_accuracy:.1f} % test accuracy")
    print(
        f"quantized (QAT):  {100 * result.qat_accuracy:.1f} % test accuracy ({result.gap_points:+.1f} points)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
