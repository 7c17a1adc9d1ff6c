"""The crossentropy loss on sequence outputs, and loss/output mismatches refused at build time.

Small hand-built graphs (a frozen layer, a StopGradient, a trainable layer) whose logits
have the class axis last; PyTorch's ``cross_entropy(ignore_index=-100)`` on the flattened
logits is the reference for the loss and every gradient.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import TrainingError
from onnx_stopgrad.training import generate_artifacts, load

pytestmark = pytest.mark.training

FEATURES, CLASSES = 6, 5


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "frozen.weight": rng.standard_normal((FEATURES, FEATURES)).astype(np.float32),
        "head.weight": rng.standard_normal((FEATURES, CLASSES)).astype(np.float32),
        "head.bias": rng.standard_normal(CLASSES).astype(np.float32),
    }


def _model(lead: tuple[int, ...], extra_outputs: tuple[tuple[str, int, list], ...] = ()) -> onnx.ModelProto:
    """x (*lead, F) -> MatMul -> Tanh -> StopGradient -> MatMul + bias -> logits (*lead, C)."""
    nodes = [
        helper.make_node("MatMul", ["x", "frozen.weight"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node(OP_TYPE, ["t"], ["s"], domain=DOMAIN, name="stop"),
        helper.make_node("MatMul", ["s", "head.weight"], ["z"]),
        helper.make_node("Add", ["z", "head.bias"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [*lead, CLASSES])]
    for name, dtype, shape in extra_outputs:
        nodes.append(helper.make_node("Identity", ["x" if dtype == TensorProto.FLOAT else "n"], [name]))
        outputs.append(helper.make_tensor_value_info(name, dtype, shape))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*lead, FEATURES])]
    if any(dtype != TensorProto.FLOAT for _, dtype, _ in extra_outputs):
        inputs.append(helper.make_tensor_value_info("n", TensorProto.INT64, list(lead)))
    graph = helper.make_graph(
        nodes, "seq", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in _weights().items()]
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    )


def _torch_reference(x: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    w = {k: torch.tensor(v, requires_grad=k != "frozen.weight") for k, v in _weights().items()}
    stopped = torch.tanh(torch.from_numpy(x) @ w["frozen.weight"]).detach()
    logits = stopped @ w["head.weight"] + w["head.bias"]
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, -2), torch.from_numpy(labels).flatten(), ignore_index=-100
    )
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in w.items() if t.grad is not None}


def _labels(lead: tuple[int, ...]) -> np.ndarray:
    labels = np.random.default_rng(1).integers(0, CLASSES, size=lead).astype(np.int64)
    flat = labels.reshape(-1)
    flat[[0, 2, 3]] = -100  # padding and prompt tokens, as Hugging Face marks them
    return labels


@pytest.mark.parametrize(
    ("lead", "shape"),
    [((4,), (4,)), ((2, 4), (2, 4)), ((2, 3, 2), (2, 3, 2)), (("batch", "seq"), (3, 5))],
    ids=["N,C", "B,T,C", "B,H,W,C", "dynamic-B,T,C"],
)
def test_crossentropy_class_axis_last_matches_torch(lead, shape, tmp_path):
    report = generate_artifacts(_model(lead), loss="crossentropy", artifact_directory=tmp_path)
    assert set(report.trainable) == {"head.weight", "head.bias"}
    x = np.random.default_rng(2).standard_normal((*shape, FEATURES)).astype(np.float32)
    labels = _labels(shape)
    state, module, _ = load(tmp_path)
    assert module.input_names() == ["x", "labels"]
    module.train()
    loss = float(np.asarray(module(x, labels)))
    expected_loss, expected_grads = _torch_reference(x, labels)
    assert abs(loss - expected_loss) <= 1e-5 * abs(expected_loss)
    for name, expected in expected_grads.items():
        grad = state.parameters[name].grad
        assert np.abs(grad - expected).max() <= 1e-5 * np.abs(expected).max(), name


def test_ort_loss_enum_gets_the_same_loss(tmp_path):
    """ORT's own LossType.CrossEntropyLoss (which fails at the first step on (B, T, C)) is
    built as "crossentropy": same training graph."""
    from onnxruntime.training.artifacts import LossType

    generate_artifacts(_model((2, 4)), loss=LossType.CrossEntropyLoss, artifact_directory=tmp_path / "enum")
    generate_artifacts(_model((2, 4)), loss="crossentropy", artifact_directory=tmp_path / "name")
    ops = [
        [(n.op_type, tuple(a.i for a in n.attribute if a.name == "ignore_index")) for n in m.graph.node]
        for m in (onnx.load(str(tmp_path / d / "training_model.onnx")) for d in ("enum", "name"))
    ]
    assert ops[0] == ops[1]
    assert ("SoftmaxCrossEntropyLoss", (-100,)) in ops[0]


FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


@pytest.mark.parametrize(
    ("lead", "extra", "kwargs", "words"),
    [
        ((4,), (("feat", FLOAT, [4, FEATURES]), ("more", FLOAT, [4, FEATURES])), {}, "gets 3: logits, feat"),
        (
            (2, 4),
            (("feat", FLOAT, [2, 4, FEATURES]),),
            {},
            "reads feat (float, shape (2, 4, 6)) as its integer",
        ),
        ((2, 4), (("n_out", INT64, [2, 5]),), {}, "which needs shape (2, 4)"),
        ((2, 4), (), {"loss_input_names": ["s"]}, "'s' is not one; choose one of: logits"),
        ((2, 4), (("n_out", INT64, [2, 4]),), {"loss_input_names": ["n_out"]}, "needs a float prediction"),
        ((2, 4), (("x_out", FLOAT, [2, 4, FEATURES]),), {"loss": "mse"}, "needs shape (2, 4, 5)"),
    ],
    ids=["three-outputs", "float-labels", "label-shape", "not-an-output", "int-logits", "mse-target"],
)
def test_mismatch_refused_before_the_build(lead, extra, kwargs, words, tmp_path):
    kwargs = {"loss": "crossentropy", **kwargs}
    with pytest.raises(TrainingError) as caught:
        generate_artifacts(_model(lead, extra), artifact_directory=tmp_path / "a", **kwargs)
    message = str(caught.value)
    assert words in message and "\n" not in message, message
    assert not (tmp_path / "a").exists()


def test_rank_one_logits_refused(tmp_path):
    model = _model((4,))
    model.graph.output[0].type.tensor_type.shape.ClearField("dim")
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 4
    with pytest.raises(TrainingError, match=r"logits \(float, shape \(4,\)\) has rank 1; use mse or bce"):
        generate_artifacts(model, loss="crossentropy", artifact_directory=tmp_path / "a")


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_loss_input_then_train_on_sequence_labels(tmp_path):
    """Two outputs: refused as one line; --loss-input logits picks the output; `train` refuses
    an out-of-range label, runs on (B, T) labels with -100 entries and lowers the loss."""
    path = tmp_path / "m.onnx"
    onnx.save(_model((2, 4), (("feat", FLOAT, [2, 4, FEATURES]),)), str(path))
    refused = CliRunner().invoke(
        main, ["artifacts", str(path), "--loss", "crossentropy", "-o", str(tmp_path / "r")]
    )
    assert refused.exit_code == 1
    assert refused.output.count("\n") == 1 and "--loss-input" in refused.output, refused.output
    out = tmp_path / "a"
    result = _run("artifacts", path, "-o", out, "--loss", "crossentropy", "--loss-input", "logits", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["trainable"]) == {"head.weight", "head.bias"}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 4, FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=(8, 4)).astype(np.int64)
    labels[:, -1] = -100
    labels[3, 0] = CLASSES  # ORT would return a meaningless loss for it: refused first
    np.savez(tmp_path / "bad.npz", x=x, labels=labels)
    bad = CliRunner().invoke(main, ["train", str(out), "--data", str(tmp_path / "bad.npz")])
    assert bad.exit_code == 1
    assert (
        bad.output == f"error: labels: 1 value(s) outside [0, {CLASSES}) and not -100 (e.g. {CLASSES}); "
        "labels are class indices, or -100 to skip a position\n"
    )
    labels[3, 0] = 1
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    trained = _run("train", out, "--data", tmp_path / "data.npz", "--epochs", "5", "--lr", "0.05")
    assert trained.exit_code == 0, trained.output
    losses = [float(loss) for loss in re.findall(r"epoch \d+/5: loss ([\d.]+)", trained.output)]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_second_output_read_as_labels_is_warned(tmp_path, caplog):
    """ORT passes every output to the loss: a model that outputs its own labels trains on them,
    with a warning saying so."""
    model = _model((2, 4), (("n_out", INT64, [2, 4]),))
    with caplog.at_level(logging.WARNING, logger="onnx_stopgrad"):
        generate_artifacts(model, loss="crossentropy", artifact_directory=tmp_path)
    assert any(
        "reads the model's second output, n_out, as its labels" in r.getMessage() for r in caplog.records
    )
    _, module, _ = load(tmp_path)
    assert module.input_names() == ["x", "n"]
    x = np.random.default_rng(2).standard_normal((2, 4, FEATURES)).astype(np.float32)
    labels = _labels((2, 4))
    module.train()
    loss = float(np.asarray(module(x, labels)))
    expected_loss, _ = _torch_reference(x, labels)
    assert abs(loss - expected_loss) <= 1e-5 * abs(expected_loss)
