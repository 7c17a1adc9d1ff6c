"""analyze and show through click's runner, including bad input (one line, exit != 0)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from analysis_graphs import frozen_backbone
from click.testing import CliRunner

from onnx_stopgrad.cli import main


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(frozen_backbone(), path)
    return path


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_analyze_text(model_path) -> None:
    result = _run("analyze", model_path, "--static", "--dim", "batch=8")
    assert result.exit_code == 0, result.output
    assert "frozen (no gradient left): 2" in result.output
    assert "static count" in result.output and "batch=8" in result.output


def test_analyze_json(model_path) -> None:
    result = _run("analyze", model_path, "--json", "--static")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {p["name"] for p in data["frozen"]} == {"W1", "b1"}
    assert [p["name"] for p in data["unaffected"]] == ["W2"]


def test_analyze_at_and_loss_output(tmp_path) -> None:
    path = tmp_path / "plain.onnx"
    onnx.save(frozen_backbone(with_stop=False), path)
    result = _run("analyze", path, "--at", "h", "--loss-output", "y", "--json", "--static")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {p["name"] for p in data["frozen"]} == {"W1", "b1"}
    assert data["stops"][0]["origin"] == "at"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["analyze", "missing.onnx"], "no such file"),
        (["analyze", "{model}", "--dim", "batch"], "NAME=VALUE"),
        (["analyze", "{model}", "--dim", "batch=0"], "NAME=VALUE"),
        (["analyze", "{model}", "--loss-output", "yy"], "did you mean y"),
        (["analyze", "{model}", "--at", "no_such_tensor"], "no_such_tensor"),
        (["analyze", "{junk}"], "not a readable ONNX model"),
        (["show", "{model}", "-o", "{tmp}/g.jpg"], "unknown picture format"),
        (["show", "{model}", "-o", "{tmp}/nodir/g.svg"], "does not exist"),
        (["show", "{model}", "--loss-output", "nope"], "nope"),
    ],
)
def test_bad_input_is_one_line(model_path, tmp_path, args, fragment) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not a model at all")
    fill = {"model": model_path, "junk": junk, "tmp": tmp_path}
    before = model_path.read_bytes()
    result = _run(*[a.format(**fill) for a in args])
    _one_line_error(result, fragment)
    assert model_path.read_bytes() == before


def test_show_dot_and_default_output(model_path, tmp_path) -> None:
    result = _run("show", model_path, "-o", tmp_path / "g.dot", "--max-nodes", "3")
    assert result.exit_code == 0, result.output
    assert "collapsed" in result.output or "boxes" in result.output
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    if shutil.which("dot"):
        result = _run("show", model_path)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "m.svg").exists()


def test_show_without_graphviz(model_path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = _run("show", model_path, "-o", tmp_path / "g.png")
    _one_line_error(result, "apt-get install -y graphviz")
    assert not (tmp_path / "g.png").exists()


def test_help_shows_examples() -> None:
    for command in ("analyze", "show"):
        result = _run(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output
