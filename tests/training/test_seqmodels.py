"""Real transformer architectures train in ORT exactly as in PyTorch with ``.detach()``.

Tiny, randomly initialised GPT-2 LM (logits (B, T, V), labels with -100), BERT sequence
classifier (TorchScript and dynamo exports) and a ViT-style encoder, each stopped after
its first block by a forward hook that detaches the block's output. ORT's artifacts
(crossentropy, AdamW) against PyTorch autograd: one and three steps, the loss and every
gradient to 1e-5 relative, the trainable set, every frozen tensor bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

from onnx import numpy_helper
from seqmodel_cases import bert_classifier, bert_token_classifier, export, gpt2_lm, vit_classifier
from seqmodel_reference import assert_same_training, ort_steps, torch_steps

from onnx_stopgrad.training import generate_artifacts

pytestmark = pytest.mark.training

STEPS = 3


def _check(case, tmp_path, dynamo: bool = False) -> None:
    model = export(case, tmp_path / "model.onnx", dynamo)
    report = generate_artifacts(
        tmp_path / "model.onnx", loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path / "a",
        measure_removed=False,
    )  # fmt: skip
    params = dict(case.module.named_parameters())
    behind = {n for n in params if n.startswith(case.frozen_prefixes)}
    assert set(report.trainable) == set(params) - behind
    assert behind <= set(report.frozen)
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [v.tobytes() for v in initializers.values() if v.dtype == np.float32 and v.size > 1]
    assert len(set(weights)) == len(weights), "two weights are equal: the comparison would be ambiguous"
    initial = {n: initializers[n] for n in (*report.trainable, *report.frozen)}
    for name in behind:  # the frozen tensors start as the PyTorch weights, bit for bit
        np.testing.assert_array_equal(initial[name], params[name].detach().numpy())

    reference = torch_steps(case.module, case.inputs, case.labels, STEPS)
    ours = ort_steps(tmp_path / "a", case.inputs, case.labels, STEPS)
    assert_same_training(ours, reference, set(report.trainable), initial)


EXPORTERS = pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])


def _needs(dynamo: bool, *modules: str) -> None:
    for name in (*modules, *(["onnxscript"] if dynamo else [])):
        pytest.importorskip(name)


@EXPORTERS
def test_gpt2_lm_sequence_logits_and_ignored_labels(tmp_path, dynamo):
    """(B, T, V) logits, -100 labels; the tied embedding trains only through the LM head."""
    _needs(dynamo, "transformers")
    case = gpt2_lm()
    assert (case.labels == -100).sum() == 3
    _check(case, tmp_path, dynamo)


@EXPORTERS
def test_bert_sequence_classifier(tmp_path, dynamo):
    _needs(dynamo, "transformers")
    _check(bert_classifier(), tmp_path, dynamo)


def test_bert_token_classifier(tmp_path):
    """(B, T, C) logits of a token classifier, -100 on [CLS] and padding."""
    _needs(False, "transformers")
    _check(bert_token_classifier(), tmp_path)


@EXPORTERS
def test_vit_encoder(tmp_path, dynamo):
    _needs(dynamo)
    _check(vit_classifier(), tmp_path, dynamo)
