"""``onnx-stopgrad artifacts`` and ``train`` through click's runner."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from artifact_counts import backward_nodes
from click.testing import CliRunner
from training_cases import CASES, by_helper
from training_reference import ort_without_stops

from onnx_stopgrad import OP_TYPE
from onnx_stopgrad.cli import main

pytestmark = pytest.mark.training

CASE = CASES["backbone"]
STOP_AT = "backbone/out_relu_out"


@pytest.fixture()
def plain_model(tmp_path):
    """The backbone case with its stop taken out (the CLI's --at puts one back)."""
    torch.manual_seed(0)
    model = by_helper(CASE, CASE.make())
    node = next(n for n in model.graph.node if n.op_type == OP_TYPE)
    model.graph.node.remove(node)
    for other in model.graph.node:
        other.input[:] = [STOP_AT if name == node.output[0] else name for name in other.input]
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    return path


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_artifacts_with_at_then_train(plain_model, tmp_path):
    before = plain_model.read_bytes()
    out = tmp_path / "art"
    result = _run("artifacts", plain_model, "-o", out, "--loss", "crossentropy", "--at", STOP_AT)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "trainable (2): head.bias, head.weight" in text
    assert "frozen (4): backbone.fc1.bias" in text
    # The counts, derived without onnx-stopgrad: diffing the training and eval models, and
    # ORT's own generate_artifacts on the model without the stop (every parameter trains).
    params = [t.name for t in onnx.load(str(plain_model)).graph.initializer]
    without = ort_without_stops(onnx.load(str(plain_model)), params, "crossentropy", tmp_path / "ort")
    with_stop = backward_nodes(out)
    assert (
        f"gradient nodes: {with_stop}; the stops removed {without - with_stop} ({without} without them)"
        in text
    )
    assert "adjusted: IR version" in text
    assert plain_model.read_bytes() == before

    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.standard_normal((20, 6)).astype(np.float32), labels=rng.integers(0, 3, 20))
    checkpoint = (out / "checkpoint").read_bytes()
    result = _run("train", out, "--data", data, "--epochs", "2", "--lr", "0.01")
    assert result.exit_code == 0, result.output
    assert "epoch 1/2: loss" in result.output and "epoch 2/2: loss" in result.output
    assert (out / "checkpoint").read_bytes() != checkpoint

    from onnxruntime.training.api import CheckpointState

    params = {name: p.data for name, p in CheckpointState.load_checkpoint(str(out / "checkpoint")).parameters}
    original = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(plain_model)).graph.initializer}
    for name, value in params.items():
        changed = not np.array_equal(value, original[name])
        assert changed == name.startswith("head."), name


def test_artifacts_json_and_user_error(plain_model, tmp_path):
    result = _run("artifacts", plain_model, "-o", tmp_path / "a", "--loss", "mse", "--at", STOP_AT, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["trainable"] == ["head.bias", "head.weight"] and report["gradient_nodes_removed"] > 0

    result = CliRunner().invoke(
        main, ["artifacts", str(plain_model), "-o", str(tmp_path / "b"), "--loss", "mse",
               "--at", STOP_AT, "--requires-grad", "backbone.fc1.weight"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(
        "error: parameter 'backbone.fc1.weight'"
    )
    assert not (tmp_path / "b").exists()


def test_train_names_the_missing_arrays(plain_model, tmp_path):
    _run("artifacts", plain_model, "-o", tmp_path / "a", "--loss", "crossentropy", "--at", STOP_AT)
    data = tmp_path / "data.npz"
    np.savez(data, inputs=np.zeros((8, 6), np.float32))
    result = CliRunner().invoke(main, ["train", str(tmp_path / "a"), "--data", str(data)])
    assert result.exit_code == 1
    assert "no array named x, labels" in result.output and "Traceback" not in result.output


def test_artifacts_with_at_never_overwrites_the_input(plain_model, tmp_path):
    """`artifacts training_model.onnx -o . --at T` once replaced the input model."""
    model = tmp_path / "training_model.onnx"
    plain_model.rename(model)
    before = model.read_bytes()
    result = CliRunner().invoke(
        main, ["artifacts", str(model), "-o", str(tmp_path), "--loss", "mse", "--at", STOP_AT]
    )
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "would overwrite an input" in result.output
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_model.onnx"]
