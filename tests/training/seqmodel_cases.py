"""Tiny, randomly initialised real architectures with a stop, and their exports.

Each builder returns a :class:`SeqCase`: a module whose forward takes the model inputs
and returns logits with the class axis last, with a forward hook that detaches one inner
module's output (the place the stop goes), inputs, and labels with ``-100`` entries.
Dropout probabilities are 0 so PyTorch and ORT compute the same thing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from seqmodel_reference import detach_output, perturb
from torch import nn

from onnx_stopgrad import torch as sg_torch

__all__ = ["SeqCase", "bert_classifier", "bert_token_classifier", "export", "gpt2_lm", "vit_classifier"]

B, T, VOCAB = 2, 6, 40


@dataclass
class SeqCase:
    module: nn.Module
    input_names: list[str]
    inputs: list[np.ndarray]
    labels: np.ndarray
    #: Parameter-name prefixes behind the stop (what PyTorch gives no gradient).
    frozen_prefixes: tuple[str, ...]


def _token_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and an attention mask whose second row ends in two padding tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(B, T)).astype(np.int64)
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, -2:] = 0
    return ids, mask


class _HuggingFace(nn.Module):
    """Calls a Hugging Face model with keyword inputs and returns its logits only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
        return out[0]


def gpt2_lm(seed: int = 0) -> SeqCase:
    """GPT-2 LM (2 blocks, tied embedding and LM head), stopped after block 0; logits (B, T, V)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, n_inner=32,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = _HuggingFace(perturb(GPT2LMHeadModel(config), seed)).train()
    detach_output(model.model.transformer.h[0])
    ids, mask = _token_inputs(seed)
    labels = np.random.default_rng(seed + 1).integers(0, VOCAB, size=(B, T)).astype(np.int64)
    labels[mask == 0] = -100  # padding, as Hugging Face's data collators mark it
    labels[0, 0] = -100
    frozen = ("model.transformer.wpe.", "model.transformer.h.0.")
    return SeqCase(model, ["input_ids", "attention_mask"], [ids, mask], labels, frozen)


def bert_classifier(seed: int = 0) -> SeqCase:
    """BERT sequence classifier (2 encoder layers, 3 classes), stopped after layer 0; logits (B, 3)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = _HuggingFace(perturb(BertForSequenceClassification(config), seed)).train()
    detach_output(model.model.bert.encoder.layer[0])
    ids, mask = _token_inputs(seed)
    labels = np.array([2, 0], dtype=np.int64)
    frozen = ("model.bert.embeddings.", "model.bert.encoder.layer.0.")
    return SeqCase(model, ["input_ids", "attention_mask"], [ids, mask], labels, frozen)


def bert_token_classifier(seed: int = 0) -> SeqCase:
    """BERT token classifier (4 labels), stopped after layer 0; logits (B, T, 4), labels -100 on
    [CLS] and padding, as Hugging Face's token-classification examples write them."""
    from transformers import BertConfig, BertForTokenClassification

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=4,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = _HuggingFace(perturb(BertForTokenClassification(config), seed)).train()
    detach_output(model.model.bert.encoder.layer[0])
    ids, mask = _token_inputs(seed)
    labels = np.random.default_rng(seed + 2).integers(0, 4, size=(B, T)).astype(np.int64)
    labels[:, 0] = -100
    labels[mask == 0] = -100
    frozen = ("model.bert.embeddings.", "model.bert.encoder.layer.0.")
    return SeqCase(model, ["input_ids", "attention_mask"], [ids, mask], labels, frozen)


class _Block(nn.Module):
    """Pre-norm ViT block: LayerNorm, multi-head attention, LayerNorm, GELU MLP, residuals."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT-style classifier: Conv patch embedding, class token, position embedding, 2 blocks."""

    def __init__(self, image: int = 8, patch: int = 4, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(_Block(dim, 2, 32), _Block(dim, 2, 32))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_classifier(seed: int = 0) -> SeqCase:
    """The ViT above, stopped after block 0; logits (B, 5)."""
    torch.manual_seed(seed)
    model = perturb(ViT(), seed).train()
    detach_output(model.blocks[0])
    pixels = np.random.default_rng(seed).standard_normal((B, 3, 8, 8)).astype(np.float32)
    labels = np.array([4, 1], dtype=np.int64)
    frozen = ("patch_embed.", "cls_token", "pos_embed", "blocks.0.")
    return SeqCase(model, ["pixels"], [pixels], labels, frozen)


def export(case: SeqCase, path: Path, dynamo: bool) -> onnx.ModelProto:
    """Export with onnx_stopgrad.torch.export (the hook's detach becomes a StopGradient).

    TorchScript: no constant folding, which would copy a tied weight (GPT-2's embedding and
    LM head) into a second, untied initializer.
    """
    args = tuple(torch.from_numpy(a) for a in case.inputs)
    options: dict = {"dynamo": True, "optimize": False} if dynamo else {"do_constant_folding": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = sg_torch.export(
            case.module, args, path, input_names=case.input_names, output_names=["logits"],
            opset_version=17 if not dynamo else 18, **options,
        )  # fmt: skip
    assert report.stop_gradients == 1, report
    model = onnx.load(str(path))
    if _use_first_names(model, case.module):
        onnx.save(model, str(path))
    return model


def _use_first_names(model: onnx.ModelProto, module: nn.Module) -> bool:
    """Name tied weights as ``module.named_parameters()`` does (the first name of each
    parameter; the dynamo exporter may use another, e.g. GPT-2's ``lm_head.weight``)."""
    first = {id(p): name for name, p in module.named_parameters()}
    renames = {
        name: first[id(p)]
        for name, p in module.named_parameters(remove_duplicate=False)
        if first[id(p)] != name
    }
    renamed = False
    for tensor in model.graph.initializer:
        if tensor.name in renames:
            old, tensor.name = tensor.name, renames[tensor.name]
            for node in model.graph.node:
                node.input[:] = [tensor.name if i == old else i for i in node.input]
            renamed = True
    return renamed
