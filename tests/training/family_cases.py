"""Models for gradient scaling and straight-through, each with an independent PyTorch reference.

Every module takes its gradient constructs as callables, so the same weights run as

* the PyTorch reference: hand-written ``autograd.Function`` s (a GRL, a gradient scale, a
  straight-through estimator) that share no code with onnx-stopgrad;
* a plain float export (identity constructs), which the passes then rewrite;
* an export through ``onnx_stopgrad.torch.export`` with ``gradient_scale`` /
  ``straight_through`` (both exporters).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

B = 4  # batch
LAMBDA = 0.3  # DANN's gradient-reversal strength
AUX_SCALE = 0.1  # multi-task: the auxiliary loss's share of the trunk gradient
BETA = 0.25  # VQ-VAE commitment weight

Construct = Callable[..., torch.Tensor]


class ReferenceScale(torch.autograd.Function):
    """``x`` forward, ``factor * grad`` backward: the GRL of the DANN paper when factor < 0."""

    @staticmethod
    def forward(ctx, x, factor):  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * ctx.factor, None


class ReferenceSTE(torch.autograd.Function):
    """Forward ``q``, backward the identity to ``x`` and nothing to ``q``."""

    @staticmethod
    def forward(ctx, x, q):  # type: ignore[override]
        return q.view_as(q)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


def reference_scale(factor: float) -> Construct:
    return lambda x: ReferenceScale.apply(x, factor)


def identity(x: torch.Tensor, *_: object) -> torch.Tensor:
    return x


def forward_only(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """A straight-through site exported without the construct: plain ``q``."""
    return q


class DANN(torch.nn.Module):
    """Feature extractor, a label head and a domain head behind a gradient-reversal layer."""

    def __init__(self, grl: Construct) -> None:
        super().__init__()
        self.features = torch.nn.Linear(8, 16)
        self.label = torch.nn.Linear(16, 3)
        self.domain = torch.nn.Linear(16, 2)
        self.grl = grl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.features(x))
        return torch.cat([self.label(f), self.domain(self.grl(f))], dim=1)


class MultiTask(torch.nn.Module):
    """A shared trunk, a main head and an auxiliary head whose gradient reaches the trunk scaled."""

    def __init__(self, scale: Construct) -> None:
        super().__init__()
        self.trunk = torch.nn.Linear(8, 16)
        self.main = torch.nn.Linear(16, 3)
        self.aux = torch.nn.Linear(16, 2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.trunk(x))
        return torch.cat([self.main(h), self.aux(self.scale(h))], dim=1)


class FakeQuant(torch.nn.Module):
    """Per-tensor fake quantization ``clip(round(x / s) * s, -a, a)`` passed through ``ste``."""

    def __init__(self, step: float, limit: float, ste: Construct) -> None:
        super().__init__()
        self.step, self.limit, self.ste = step, limit, ste

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(x / self.step) * self.step, -self.limit, self.limit)
        return self.ste(x, q)


class QATMLP(torch.nn.Module):
    """Two linear layers, weights and activations fake-quantized (4-bit-ish steps)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, ste: Construct) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, n_hidden)
        self.fc2 = torch.nn.Linear(n_hidden, n_out)
        self.wq1 = FakeQuant(0.02, 0.16, ste)
        self.wq2 = FakeQuant(0.02, 0.16, ste)
        self.aq = FakeQuant(0.25, 4.0, ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1 = self.wq1(self.fc1.weight)
        h = self.aq(torch.relu(torch.nn.functional.linear(x, w1, self.fc1.bias)))
        w2 = self.wq2(self.fc2.weight)
        return torch.nn.functional.linear(h, w2, self.fc2.bias)


def idiom_ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """PyTorch's own straight-through idiom."""
    return x + (q - x).detach()


class VQVAE(torch.nn.Module):
    """Encoder, a codebook quantizer (ArgMin over distances + Gather) and a decoder.

    Returns the whole VQ-VAE loss: reconstruction plus ``|stop(z) - e|^2 + beta |z - stop(e)|^2``;
    ``quantize(z, e)`` is the straight-through ``z + stop(e - z)`` (or a construct).
    """

    def __init__(self, quantize: Construct, stop: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(8, 4)
        self.codebook = torch.nn.Parameter(torch.randn(6, 4))
        self.decoder = torch.nn.Linear(4, 8)
        self.quantize, self.stop = quantize, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        distances = (z * z).sum(1, keepdim=True) - 2 * z @ self.codebook.t() + (self.codebook**2).sum(1)
        e = self.codebook[torch.argmin(distances, dim=1)]
        x_hat = self.decoder(self.quantize(z, e))
        reconstruction = ((x_hat - x) ** 2).mean()
        codebook = ((self.stop(z) - e) ** 2).mean()
        commitment = ((z - self.stop(e)) ** 2).mean()
        return (reconstruction + codebook + BETA * commitment).reshape(1)


def detach(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


def vq_idiom(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    return z + (e - z).detach()


def inputs(seed: int = 0, n_in: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, n_in)).astype(np.float32)]


def label(width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, width)).astype(np.float32)


def export_plain(module: torch.nn.Module, args: tuple) -> onnx.ModelProto:
    """torch.onnx.export (TorchScript), training mode, no constant folding: names = parameter names."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buffer, input_names=["x"], output_names=["y"], dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, opset_version=17,
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = min(model.ir_version, 10)
    return model


def export_with_constructs(module: torch.nn.Module, args: tuple, path: Path, dynamo: bool) -> onnx.ModelProto:
    """onnx_stopgrad.torch.export: detach and the construct helpers kept."""
    from onnx_stopgrad.torch import export

    options: dict = {"input_names": ["x"], "output_names": ["y"], "dynamo": dynamo}
    if dynamo:  # no constant folding: a fake-quantized weight must follow the weight as it trains
        options.update(optimize=False)
    else:
        options.update(training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, opset_version=17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(module, args, path, **options)
    return onnx.load(str(path))


def node_reading(model: onnx.ModelProto, op_type: str, tensor: str) -> onnx.NodeProto:
    """The node of ``op_type`` that reads ``tensor``."""
    (node,) = [n for n in model.graph.node if n.op_type == op_type and tensor in n.input]
    return node


def output_of(model: onnx.ModelProto, op_type: str, index: int = 0) -> str:
    return [n for n in model.graph.node if n.op_type == op_type][index].output[0]
