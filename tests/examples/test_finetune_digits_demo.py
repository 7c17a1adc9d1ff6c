"""Smoke test of `make demo`'s pipeline (examples/finetune_digits.py), with fewer steps.

The reference is the committed model itself: its backbone weights must come out of
training bit for bit unchanged, its head must move, and the held-out accuracy must rise
from chance to well above it. The end-to-end run (no stop) is the control: there the same
training does move the backbone, so the first check can fail.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime.training")
pytest.importorskip("sklearn")

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]
BACKBONE = ["backbone.0.weight", "backbone.0.bias", "backbone.2.weight", "backbone.2.bias"]
HEAD = ["head.weight", "head.bias"]


def _load_demo():
    spec = importlib.util.spec_from_file_location("finetune_digits", REPO / "examples" / "finetune_digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("demo")
    stopped = out / "stopped.onnx"
    printed = demo.insert_stop_with_cli(demo.MODEL_PATH, demo.BACKBONE_OUTPUT, stopped)
    report = demo.build_artifacts(stopped, out / "stop")
    end_to_end = demo.build_artifacts(demo.MODEL_PATH, out / "full", requires_grad=BACKBONE + HEAD)
    return {"out": out, "stopped": stopped, "printed": printed, "report": report, "end_to_end": end_to_end}


def _initial_weights() -> dict[str, np.ndarray]:
    graph = onnx.load(str(demo.MODEL_PATH)).graph
    return {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}


def test_committed_model_is_small_and_loadable_by_ort_119() -> None:
    assert demo.MODEL_PATH.stat().st_size < 5 * 1024 * 1024
    model = onnx.load(str(demo.MODEL_PATH))
    assert model.ir_version <= 10
    produced = {out for node in model.graph.node for out in node.output}
    assert demo.BACKBONE_OUTPUT in produced


def test_cli_inserted_one_stop_at_the_backbone_output(pipeline: dict) -> None:
    model = onnx.load(str(pipeline["stopped"]))
    stops = [n for n in model.graph.node if n.op_type == "StopGradient"]
    assert [list(n.input) for n in stops] == [[demo.BACKBONE_OUTPUT]]
    assert demo.BACKBONE_OUTPUT in pipeline["printed"]


def test_stop_decides_what_trains(pipeline: dict) -> None:
    report = pipeline["report"]
    assert sorted(report.trainable) == sorted(HEAD)
    assert sorted(report.frozen) == sorted(BACKBONE)
    removed = demo.gradient_nodes(pipeline["out"] / "full") - demo.gradient_nodes(pipeline["out"] / "stop")
    kept = demo.gradient_nodes(pipeline["out"] / "stop")
    assert not any(forward.startswith("/backbone/") for forward, _ in kept)
    assert {forward for forward, _ in removed} >= {"/backbone/backbone.0/Gemm", "/backbone/backbone.2/Gemm"}
    assert sum(kept.values()) == report.gradient_nodes


def test_finetuning_trains_only_the_head_and_beats_chance(pipeline: dict) -> None:
    data = demo.load_digits_split()
    before = demo.accuracy(pipeline["stopped"], data.x_test, data.y_test)
    state, _, losses = demo.finetune(pipeline["out"] / "stop", data, epochs=8, progress=False)
    trained = demo.parameters(state, BACKBONE + HEAD)
    initial = _initial_weights()
    for name in BACKBONE:
        np.testing.assert_array_equal(trained[name], initial[name], err_msg=f"{name} moved behind the stop")
    for name in HEAD:
        assert np.abs(trained[name] - initial[name]).max() > 1e-3, f"{name} did not train"
    exported = demo.export_for_inference(
        pipeline["out"] / "stop", pipeline["out"] / "finetuned.onnx", state=state, keep_stops=False
    )
    after = demo.accuracy(exported, data.x_test, data.y_test)
    assert before < 0.4  # fresh head: about chance (20%)
    assert after > 0.75 and after > before + 0.4
    assert losses[-1] < losses[0]


def test_control_without_the_stop_moves_the_backbone(pipeline: dict) -> None:
    data = demo.load_digits_split()
    state, _, _ = demo.finetune(pipeline["out"] / "full", data, epochs=1, progress=False)
    trained = demo.parameters(state, BACKBONE)
    initial = _initial_weights()
    assert all(np.abs(trained[name] - initial[name]).max() > 0 for name in BACKBONE)


def test_step_time_is_measured(pipeline: dict) -> None:
    data = demo.load_digits_split()
    times = demo.median_step_times(
        [pipeline["out"] / "stop", pipeline["out"] / "full"], data, steps=5, warmup=1
    )
    assert len(times) == 2 and all(0 < t < 1 for t in times)


def test_split_is_reproducible_and_disjoint() -> None:
    from sklearn.datasets import load_digits

    spec = importlib.util.spec_from_file_location(
        "make_digits_model", REPO / "models" / "make_digits_model.py"
    )
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    targets = load_digits().target
    committed = json.loads((REPO / "models" / "digits_split.json").read_text())
    assert maker.make_split(targets) == committed
    pretrain, train, test = (set(committed[k]) for k in ("pretrain", "finetune_train", "finetune_test"))
    assert not (pretrain & train or pretrain & test or train & test)
    assert set(targets[list(pretrain)]) == {0, 1, 2, 3, 4}
    assert set(targets[list(train)]) == set(targets[list(test)]) == {5, 6, 7, 8, 9}


def test_demo_main_prints_what_the_issue_asks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--epochs", "3", "--timing-steps", "5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    accuracy_lines = [line for line in out.splitlines() if "accuracy" in line and "%" in line]
    assert any("before" in line for line in accuracy_lines) and any(
        "after" in line for line in accuracy_lines
    )
    assert "trains:  head.bias, head.weight" in out
    removed = demo.gradient_nodes(tmp_path / "artifacts_end_to_end") - demo.gradient_nodes(
        tmp_path / "artifacts_stop"
    )
    assert sum(removed.values()) > 0 and f"the stop removed {sum(removed.values())}:" in out
    assert "with the stop" in out and "without the stop" in out
    assert "What to try next" in out
