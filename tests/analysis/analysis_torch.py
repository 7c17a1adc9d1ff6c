"""A small transformer encoder exported by torch.onnx.export (TorchScript exporter)."""

from __future__ import annotations

import warnings
from pathlib import Path


def export_encoder(path: Path, layers: int) -> Path:
    """Export embed -> TransformerEncoder(layers) -> mean -> head, training mode, dynamic batch/seq."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(16, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embed(x)).mean(dim=1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder().train(),
            (torch.randn(2, 5, 16),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "seq"}},
            training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False,
        )
    return path
