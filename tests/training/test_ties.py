"""A tied weight the exporter split in two (embedding + folded transposed LM head) is warned about."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION
from onnx_stopgrad.training._ties import split_ties

VOCAB, DIM = 7, 4
EMBEDDING = np.random.default_rng(0).standard_normal((VOCAB, DIM)).astype(np.float32)


def _tied_lm(folded: bool):
    """ids -> Gather(wte) -> StopGradient -> MatMul(head) -> logits (2, 3, V).

    ``folded``: the head reads ``onnx::MatMul_9``, a copy of wte transposed (what constant
    folding writes); else a Transpose node reads wte itself (one tensor)."""
    nodes = [
        helper.make_node("Gather", ["wte", "ids"], ["h"]),
        helper.make_node(OP_TYPE, ["h"], ["s"], domain=DOMAIN),
    ]
    initializers = [numpy_helper.from_array(EMBEDDING, "wte")]
    if folded:
        initializers.append(numpy_helper.from_array(EMBEDDING.T.copy(), "onnx::MatMul_9"))
        head = "onnx::MatMul_9"
    else:
        nodes.append(helper.make_node("Transpose", ["wte"], ["wte_t"], perm=[1, 0]))
        head = "wte_t"
    nodes.append(helper.make_node("MatMul", ["s", head], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "lm",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3, VOCAB])],
        initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    )


def test_split_ties_finds_transposed_and_square_copies():
    model = _tied_lm(folded=True)
    assert split_ties(model, ["onnx::MatMul_9"]) == [("onnx::MatMul_9", "wte", True)]
    assert split_ties(model, ["onnx::MatMul_9", "wte"]) == [("onnx::MatMul_9", "wte", True)]  # once
    square = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    model.graph.initializer.extend(
        [numpy_helper.from_array(square, "a"), numpy_helper.from_array(square.T.copy(), "b")]
    )
    assert ("a", "b", True) in split_ties(model, ["a"])


def test_split_ties_ignores_distinct_and_constant_weights():
    model = _tied_lm(folded=False)
    zeros = np.zeros((DIM, VOCAB), np.float32)
    model.graph.initializer.extend(
        [numpy_helper.from_array(zeros, "lora_b"), numpy_helper.from_array(zeros.T.copy(), "other_zeros")]
    )
    model.graph.initializer.append(numpy_helper.from_array(EMBEDDING.T + np.float32(1e-3), "near"))
    assert split_ties(model, ["wte", "lora_b", "near"]) == []


@pytest.mark.training
@pytest.mark.parametrize("folded", [True, False])
def test_generate_artifacts_warns(folded, tmp_path, caplog):
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.training import generate_artifacts

    with caplog.at_level(logging.WARNING, logger="onnx_stopgrad"):
        report = generate_artifacts(_tied_lm(folded), loss="crossentropy", artifact_directory=tmp_path)
    warned = [r.getMessage() for r in caplog.records if "tied weight" in r.getMessage()]
    if folded:
        assert report.trainable == ("onnx::MatMul_9",) and report.frozen == ("wte",)
        expected = (
            "onnx::MatMul_9 trains, but holds the transpose of wte: probably one tied weight the "
            "exporter split in two, which will now train apart; export with do_constant_folding=False "
            "(TorchScript) or optimize=False (dynamo) to keep it one tensor"
        )
        assert warned == [expected]
    else:
        assert report.trainable == ("wte",) and not warned
