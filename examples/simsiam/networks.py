"""SimSiam's PyTorch side: networks, augmentations, and the export of the loss graph.

PyTorch only defines things here; every training step runs in ONNX Runtime.

* :class:`SimSiamLoss` maps two augmented views to the symmetric negative-cosine loss of
  Chen & He (2021): ``L = D(p_a, z_b) / 2 + D(p_b, z_a) / 2`` with ``D(p, z) = -cos(p, z)``.
  Exported, the loss is the graph's only output, and the normalised targets are named
  :data:`TARGET_TENSORS`: ``target_a`` (= z_a / |z_a|) and ``target_b``. SimSiam stops the
  gradient exactly there; ``onnx-stopgrad`` inserts the stops by these names.
* The batch normalisation uses batch statistics only (no running averages), so it exports
  to plain ops (ReduceMean, Sub, Mul, Sqrt, Div) that ONNX Runtime can differentiate;
  evaluation normalises over the evaluation set.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

__all__ = [
    "EMBED_DIM",
    "TARGET_TENSORS",
    "BatchNorm",
    "L2Normalize",
    "SimSiam",
    "SimSiamLoss",
    "augment",
    "export_encoder",
    "export_loss_graph",
]

EMBED_DIM = 64
HIDDEN = 256
PREDICTOR_HIDDEN = 128
TARGET_TENSORS = ("target_a", "target_b")
IR_VERSION = 10  # ONNX Runtime 1.19 (training) loads IR <= 10
OPSET = 17


class BatchNorm(nn.Module):
    """Batch normalisation over axis 0 with batch statistics only (affine)."""

    def __init__(self, features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x - x.mean(dim=0, keepdim=True)
        variance = (centered * centered).mean(dim=0, keepdim=True)
        return centered / torch.sqrt(variance + self.eps) * self.weight + self.bias


class L2Normalize(nn.Module):
    """``x / |x|`` along axis 1 (exports to Mul, ReduceSum, Sqrt, Div)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


class SimSiam(nn.Module):
    """Encoder (MLP backbone + projector) and predictor, as in the paper but small."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(64, HIDDEN), BatchNorm(HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), BatchNorm(HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, dim),
        )  # fmt: skip
        self.predictor = nn.Sequential(
            nn.Linear(dim, PREDICTOR_HIDDEN), BatchNorm(PREDICTOR_HIDDEN), nn.ReLU(),
            nn.Linear(PREDICTOR_HIDDEN, dim),
        )  # fmt: skip


class SimSiamLoss(nn.Module):
    """Two views -> symmetric negative cosine (a scalar); no stop here: ONNX gets it later."""

    def __init__(self, net: SimSiam) -> None:
        super().__init__()
        self.net = net
        self.prediction_norm = L2Normalize()
        self.target_a = L2Normalize()  # the exported graph names its output "target_a"
        self.target_b = L2Normalize()

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        z_a, z_b = self.net.encoder(view_a), self.net.encoder(view_b)
        p_a, p_b = self.net.predictor(z_a), self.net.predictor(z_b)
        cos_ab = (self.prediction_norm(p_a) * self.target_b(z_b)).sum(dim=1).mean()
        cos_ba = (self.prediction_norm(p_b) * self.target_a(z_a)).sum(dim=1).mean()
        return -0.5 * (cos_ab + cos_ba)


class _Encoder(nn.Module):
    """The encoder alone, under the same parameter names as in the loss graph."""

    def __init__(self, net: SimSiam) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.encoder(pixels)


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of each [N, 64] image (0..1): shift, 3x3 cut-out, contrast, noise."""
    n = pixels.shape[0]
    images = nn.functional.pad(pixels.reshape(n, 8, 8), (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n, 1, 1), generator=generator)
    dx = torch.randint(0, 3, (n, 1, 1), generator=generator)
    grid = torch.arange(8)
    rows, cols = (dy + grid[None, :, None]).expand(n, 8, 8), (dx + grid[None, None, :]).expand(n, 8, 8)
    out = images[torch.arange(n)[:, None, None], rows, cols]  # shifted by -1..1 pixel
    top = torch.randint(0, 6, (n, 1, 1), generator=generator)
    left = torch.randint(0, 6, (n, 1, 1), generator=generator)
    inside = (grid[None, :, None] >= top) & (grid[None, :, None] < top + 3)
    inside = inside & (grid[None, None, :] >= left) & (grid[None, None, :] < left + 3)
    cut = inside & (torch.rand(n, 1, 1, generator=generator) < 0.5)
    out = torch.where(cut, torch.zeros(()), out)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, generator=generator)
    out = out * contrast + 0.1 * torch.randn(n, 8, 8, generator=generator)
    return out.reshape(n, 64)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], output: str) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter, on purpose
        torch.onnx.export(
            module, args, str(path), dynamo=False, input_names=inputs, output_names=[output],
            dynamic_axes={name: {0: "batch"} for name in inputs}, opset_version=OPSET,
        )  # fmt: skip
    return onnx.load(str(path))


def _undo_shared_initializers(model: onnx.ModelProto) -> None:
    """Give every parameter its own initializer again.

    The TorchScript exporter merges initializers of equal value (e.g. two fresh batch-norm
    scales of ones) into one plus ``Identity`` nodes; trained, they would then be one
    tied parameter. Each ``Identity`` of an initializer becomes a copy of it.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _name_scope_output(model: onnx.ModelProto, scope: str, name: str) -> None:
    """Rename the output of the last node under ``/<scope>/`` (and its readers) to ``name``."""
    nodes = [n for n in model.graph.node if n.name.startswith(f"/{scope}/")]
    if not nodes:
        raise RuntimeError(f"export changed: no node under /{scope}/")
    old = nodes[-1].output[0]
    for node in model.graph.node:
        for seq in (node.input, node.output):
            for i, tensor in enumerate(seq):
                if tensor == old:
                    seq[i] = name


def export_loss_graph(net: SimSiam, path: Path) -> onnx.ModelProto:
    """Export ``(view_a, view_b) -> loss`` with ``target_a``/``target_b`` named; IR 10."""
    example = torch.zeros(4, 64)
    model = _export(SimSiamLoss(net).train(), (example, example), path, ["view_a", "view_b"], "loss")
    _undo_shared_initializers(model)
    for tensor in TARGET_TENSORS:
        _name_scope_output(model, tensor, tensor)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return model


def export_encoder(net: SimSiam, path: Path) -> onnx.ModelProto:
    """Export ``pixels -> embedding`` (the encoder) for evaluation; IR 10."""
    model = _export(_Encoder(net).train(), (torch.zeros(4, 64),), path, ["pixels"], "embedding")
    _undo_shared_initializers(model)
    model.ir_version = IR_VERSION
    onnx.save(model, str(path))
    return model
