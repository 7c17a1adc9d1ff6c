"""Portable artifacts (generate_artifacts(portable=True), `artifacts --portable`): no StopGradient
left, and trained by ONNX Runtime alone in a process that never registers the op library,
they give the default artifacts' losses, gradients and parameters, and PyTorch's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from click.testing import CliRunner
from training_cases import CASES, by_helper
from training_reference import ort_run, torch_run

from onnx_stopgrad import DOMAIN, OP_TYPE
from onnx_stopgrad.cli import main
from onnx_stopgrad.training import generate_artifacts

pytestmark = pytest.mark.training

PROBE = Path(__file__).with_name("_portable_probe.py")
STEPS = 3
# A stop after a backbone, one on a weight read twice, one feeding a Mul.
CASE_NAMES = ("backbone", "shared_weight", "target_network")


def _model(name: str) -> tuple[onnx.ModelProto, torch.nn.Module]:
    torch.manual_seed(0)
    module = CASES[name].make()
    return by_helper(CASES[name], module), module


def _no_stops(directory: Path) -> None:
    for kind in ("training", "eval"):
        model = onnx.load(str(directory / f"{kind}_model.onnx"))
        assert not [n for n in model.graph.node if n.domain == DOMAIN or n.op_type == OP_TYPE], kind
        assert DOMAIN not in {o.domain for o in model.opset_import}, kind


def _train_without_library(jobs: list[dict], tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    done = subprocess.run(
        [sys.executable, str(PROBE), str(jobs_file)], check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_portable_artifacts_train_like_the_default_ones_without_the_library(tmp_path):
    jobs, expected = [], {}
    for name in CASE_NAMES:
        case = CASES[name]
        model, module = _model(name)
        dirs = {kind: tmp_path / name / kind for kind in ("default", "portable")}
        reports = {
            kind: generate_artifacts(
                model,
                loss=case.loss,
                optimizer="adamw",
                artifact_directory=path,
                measure_removed=False,
                portable=kind == "portable",
            )
            for kind, path in dirs.items()
        }
        assert reports["portable"].trainable == reports["default"].trainable
        assert reports["portable"].frozen == reports["default"].frozen
        assert reports["portable"].stops == reports["default"].stops != ()
        _no_stops(dirs["portable"])
        inputs = [*case.inputs(), case.label()]
        np.savez(tmp_path / name / "inputs.npz", *inputs)
        expected[name] = (ort_run(dirs["default"], inputs[:-1], inputs[-1], steps=STEPS), module, inputs)
        for kind, path in dirs.items():
            jobs.append({
                "directory": str(path), "inputs": str(tmp_path / name / "inputs.npz"),
                "steps": STEPS, "output": str(tmp_path / name / f"{kind}.npz"),
            })  # fmt: skip
    _train_without_library(jobs, tmp_path)
    for name in CASE_NAMES:
        with np.load(tmp_path / name / "default.npz") as default:
            # The subprocess really lacks the library: the default artifacts do not load there.
            assert "error" in default.files and OP_TYPE in str(default["error"]), name
        ((loss, grads), params), module, inputs = expected[name]
        with np.load(tmp_path / name / "portable.npz") as portable:
            assert "error" not in portable.files, str(portable.get("error"))
            assert portable["losses"][0] == pytest.approx(loss, rel=1e-6), name
            for param, grad in grads.items():
                np.testing.assert_allclose(portable[f"grad/{param}"], grad, rtol=1e-5, atol=1e-7)
            for param, value in params.items():
                np.testing.assert_allclose(portable[f"param/{param}"], value, rtol=1e-5, atol=1e-7)
            # PyTorch with .detach(): the independent reference.
            (torch_loss, torch_grads), torch_params = torch_run(
                module, CASES[name], inputs[:-1], inputs[-1], set(grads), steps=STEPS
            )
            assert portable["losses"][0] == pytest.approx(torch_loss, rel=1e-5), name
            for param, grad in torch_grads.items():
                np.testing.assert_allclose(portable[f"grad/{param}"], grad, rtol=1e-4, atol=1e-6)
            for param, value in torch_params.items():
                np.testing.assert_allclose(portable[f"param/{param}"], value, rtol=1e-4, atol=1e-6)


def test_cli_portable_flag(tmp_path):
    model, _ = _model("backbone")
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    result = CliRunner().invoke(
        main, ["artifacts", str(path), "--loss", "crossentropy", "--portable", "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    _no_stops(tmp_path / "out")
    training = onnx.load(str(tmp_path / "out" / "training_model.onnx"))
    assert "stop" in {n.name for n in training.graph.node if n.op_type == "Identity"}
