"""Tiny PyTorch models, their exports, and the PyTorch reference for a cut at a module.

The reference for ``--module PATH`` is PyTorch itself: a forward hook that detaches every
tensor the module returns. Parameters get distinct random values before export, so no
exporter merges two of them and each ONNX initializer maps back to one parameter by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

__all__ = [
    "CNN",
    "Exported",
    "bert_model",
    "cnn_model",
    "detached_at",
    "export_case",
    "gpt2_model",
    "module_outputs_in_torch",
    "onnx_to_torch",
    "torch_gradients",
]


@dataclass
class Exported:
    """A PyTorch model, its inputs, and its ONNX export (``path``)."""

    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor
    loss: str  # "crossentropy" or "mse"
    path: Path


def _randomize(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(
                torch.randn(param.shape, generator=generator) * 0.3 + (0.5 if param.dim() == 1 else 0.0)
            )


def export_case(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    labels: torch.Tensor,
    loss: str,
    path: Path,
    dynamo: bool,
    input_names: list[str],
) -> Exported:
    from onnx_stopgrad.torch import export

    _randomize(module, seed=7)
    module.eval()
    export(module, inputs, path, dynamo=dynamo, input_names=input_names, output_names=["y"])
    return Exported(module, inputs, labels, loss, path)


def bert_model() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str], torch.Tensor]:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    ids = torch.randint(1, 40, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 6:] = 0
    types = torch.zeros(2, 8, dtype=torch.int64)
    types[:, 4:] = 1
    positions = torch.arange(8).expand(2, 8).contiguous()
    labels = torch.tensor([0, 2])
    return (
        model,
        (ids, mask, types, positions),
        ["input_ids", "attention_mask", "token_type_ids", "position_ids"],
        labels,
    )


def gpt2_model() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str], torch.Tensor]:
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(
        vocab_size=40, n_positions=16, bos_token_id=0, eos_token_id=0, n_embd=16, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = _Hidden(GPT2Model(config))
    ids = torch.randint(0, 40, (2, 6))
    target = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 6, dtype=torch.int64)
    return model, (ids, mask), ["input_ids", "attention_mask"], target


class _Hidden(torch.nn.Module):
    """``model(ids, attention_mask=mask).last_hidden_state`` (a mask keeps transformers'
    packed-sequence detection, which TorchScript cannot export, out of the trace)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state


class _Block(torch.nn.Module):
    """conv-relu-conv plus the input (a residual block without BatchNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class _Split(torch.nn.Module):
    """A module with two outputs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(channels, channels, 1)
        self.b = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), torch.sigmoid(self.b(x))


class CNN(torch.nn.Module):
    """stem -> layer1 -> split -> (layer2, side); layer1 is read by split and side."""

    def __init__(self, channels: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.ReLU())
        self.layer1 = _Block(channels)
        self.split = _Split(channels)
        self.layer2 = _Block(channels)
        self.side = torch.nn.Conv2d(channels, channels, 1)
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer1(self.stem(x))
        p, q = self.split(h)
        y = self.layer2(p) * q + self.side(h)
        return self.head(y.mean(dim=(2, 3)))


def cnn_model() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str], torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    return CNN(), (x,), ["x"], torch.tensor([1, 3])


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, dict):  # transformers' ModelOutput is a dict too
        for key in list(value.keys()):
            value[key] = _detach(value[key])
        return value
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def detached_at(module: torch.nn.Module, paths: list[str]) -> list[Any]:
    """Register hooks that detach what each named sub-module returns; returns the handles."""
    named = dict(module.named_modules())
    return [named[p].register_forward_hook(lambda _m, _i, out: _detach(out)) for p in paths]


def _first(output: Any) -> torch.Tensor:
    """The model's first output (transformers return a ModelOutput)."""
    return output if isinstance(output, torch.Tensor) else output[0]


def _loss(case: Exported, output: torch.Tensor) -> torch.Tensor:
    if case.loss == "crossentropy":
        return torch.nn.functional.cross_entropy(output, case.labels)
    return torch.nn.functional.mse_loss(output, case.labels)


def torch_gradients(case: Exported, paths: list[str]) -> dict[str, np.ndarray | None]:
    """Gradient of every parameter for the loss with ``paths`` detached (None: no gradient)."""
    handles = detached_at(case.module, paths)
    try:
        case.module.zero_grad(set_to_none=True)
        for param in case.module.parameters():
            param.requires_grad_(True)
        loss = _loss(case, _first(case.module(*case.inputs)))
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return {n: None if p.grad is None else p.grad.numpy().copy() for n, p in case.module.named_parameters()}


def module_outputs_in_torch(case: Exported, path: str) -> list[np.ndarray]:
    """The tensors module ``path`` returns in one forward pass."""
    captured: list[np.ndarray] = []

    def hook(_m: Any, _i: Any, out: Any) -> None:
        captured.extend(t.detach().numpy().copy() for t in _tensors(out))

    handle = dict(case.module.named_modules())[path].register_forward_hook(hook)
    try:
        with torch.no_grad():
            case.module(*case.inputs)
    finally:
        handle.remove()
    return captured


def onnx_to_torch(model: onnx.ModelProto, module: torch.nn.Module) -> dict[str, tuple[str, bool]]:
    """ONNX float initializer -> (PyTorch parameter, stored transposed), matched by value."""
    params = {n: p.detach().numpy() for n, p in module.named_parameters()}
    found: dict[str, tuple[str, bool]] = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype != np.float32:
            continue
        for name, value in params.items():
            if value.shape == array.shape and np.array_equal(value, array):
                found[tensor.name] = (name, False)
                break
            if value.ndim == 2 and value.T.shape == array.shape and np.array_equal(value.T, array):
                found[tensor.name] = (name, True)
                break
    return found
