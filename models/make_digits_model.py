"""Pretrain the demo's small digits classifier and export it to ONNX.

Run ``python models/make_digits_model.py`` (from ``.venv``) to regenerate, bit for bit:

* ``models/digits_split.json``: which of scikit-learn's 1,797 digits images go where.
  ``pretrain`` (classes 0-4) trains the backbone; ``finetune_train`` and ``finetune_test``
  (classes 5-9, disjoint, 70% / 30% of each class) are the demo's fine-tuning data and its
  held-out test set.
* ``models/digits_mlp.onnx``: ``pixels`` [N, 64] float32 (raw 0..16 grey levels) ->
  ``logits`` [N, 5] for the digits 5, 6, 7, 8, 9 (label = digit - 5). The backbone was
  pretrained on the digits 0-4; the head is fresh (seeded random), so the model is at
  chance on its task until the head is fine-tuned.

The backbone's output tensor is named :data:`BACKBONE_OUTPUT` (``/backbone/output``): put
the StopGradient there. Parameters: ``backbone.0.weight/bias``, ``backbone.2.weight/bias``
(backbone), ``head.weight``, ``head.bias`` (head).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from torch import nn

__all__ = [
    "BACKBONE_OUTPUT",
    "MODEL_PATH",
    "SPLIT_PATH",
    "DigitsNet",
    "main",
    "make_split",
]

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "digits_mlp.onnx"
SPLIT_PATH = HERE / "digits_split.json"
BACKBONE_OUTPUT = "/backbone/output"

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
FINETUNE_TEST_FRACTION = 0.3
SEED = 0
HIDDEN = 512
FEATURES = 256
PRETRAIN_EPOCHS = 20
IR_VERSION = 10  # ONNX Runtime 1.19 (the training runtime) loads IR <= 10
OPSET = 17


class DigitsNet(nn.Module):
    """Scale 0..16 pixels to 0..1, then a two-layer MLP backbone and a linear head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, FEATURES), nn.ReLU()
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixels / 16.0))


def make_split(targets: np.ndarray, seed: int = SEED) -> dict[str, list[int]]:
    """Indices into ``load_digits()``: pretraining set and a disjoint fine-tune train/test split."""
    rng = np.random.default_rng(seed)
    pretrain = np.flatnonzero(np.isin(targets, PRETRAIN_CLASSES))
    train: list[int] = []
    test: list[int] = []
    for digit in FINETUNE_CLASSES:  # stratified: 30% of each class is held out
        idx = rng.permutation(np.flatnonzero(targets == digit))
        n_test = round(len(idx) * FINETUNE_TEST_FRACTION)
        test.extend(sorted(idx[:n_test].tolist()))
        train.extend(sorted(idx[n_test:].tolist()))
    return {"pretrain": pretrain.tolist(), "finetune_train": train, "finetune_test": test}


def _pretrain(x: np.ndarray, y: np.ndarray) -> DigitsNet:
    """Train backbone + a 5-way head on the pretraining classes; return the trained net."""
    net = DigitsNet(len(PRETRAIN_CLASSES))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(PRETRAIN_EPOCHS):
        for batch in torch.randperm(len(xs), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xs[batch]), ys[batch]).backward()
            opt.step()
    with torch.no_grad():
        acc = (net(xs).argmax(1) == ys).float().mean().item()
    print(f"pretraining accuracy on digits 0-4 (train set): {acc:.1%}")
    return net


def _export(net: DigitsNet, path: Path) -> None:
    """Export with stable names: ``pixels`` -> ``logits``, backbone output ``/backbone/output``."""
    net.eval()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # legacy exporter on purpose
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        net,
        (torch.zeros(1, 64),),
        str(tmp),
        dynamo=False,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
    )
    model = onnx.load(str(tmp))
    tmp.unlink()
    _rename_backbone_output(model)
    model.ir_version = IR_VERSION
    model.producer_name = "onnx-stopgrad models/make_digits_model.py"
    model.doc_string = (
        "MLP backbone pretrained on sklearn digits 0-4; fresh head for digits 5-9 "
        f"(label = digit - 5). Backbone output tensor: {BACKBONE_OUTPUT}."
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _rename_backbone_output(model: onnx.ModelProto) -> None:
    """Rename the tensor feeding the head's Gemm to :data:`BACKBONE_OUTPUT`."""
    heads = [n for n in model.graph.node if n.op_type == "Gemm" and "head.weight" in n.input]
    if len(heads) != 1:
        raise RuntimeError("export changed shape: expected exactly one Gemm reading head.weight")
    old = heads[0].input[0]
    for node in model.graph.node:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = BACKBONE_OUTPUT


def main() -> None:
    torch.manual_seed(SEED)
    digits = load_digits()
    targets = digits.target.astype(np.int64)
    split = make_split(targets)
    SPLIT_PATH.write_text(json.dumps(split, separators=(",", ":")) + "\n")
    pre = np.asarray(split["pretrain"])
    net = _pretrain(digits.data[pre].astype(np.float32), targets[pre])
    torch.manual_seed(SEED + 1)
    net.head = nn.Linear(FEATURES, len(FINETUNE_CLASSES))  # fresh head for the new task
    _export(net, MODEL_PATH)
    size_kb = MODEL_PATH.stat().st_size / 1024
    print(
        f"wrote {MODEL_PATH.relative_to(HERE.parent)} ({size_kb:.0f} KB) and "
        f"{SPLIT_PATH.relative_to(HERE.parent)}"
    )


if __name__ == "__main__":
    main()
