"""``onnx-stopgrad insert | remove | list`` through click's test runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from onnx_stopgrad import DOMAIN, OP_TYPE, __version__
from onnx_stopgrad.cli import main


class StopGradient(OpRun):
    op_domain = DOMAIN

    def _run(self, x):
        return (x,)


def _vi(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])


def _model() -> onnx.ModelProto:
    """x -> relu(h) -> mul(h, W) = m -> add(h, m) = y, plus a Neg branch n."""
    weight = numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "W")
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("Mul", ["h", "W"], ["m"], name="mul"),
        helper.make_node("Neg", ["m"], ["n"], name="neg"),
        helper.make_node("Add", ["h", "n"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "g", [_vi("x")], [_vi("y")], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(_model(), path)
    return path


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(map(str, args)), prog_name="onnx-stopgrad")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _stops(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(path).graph.node if n.op_type == OP_TYPE]


def _outputs(path: Path) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    return ReferenceEvaluator(str(path), new_ops=[StopGradient]).run(None, {"x": x})[0]


def _inputs(path: Path, node: str) -> list[str]:
    return list(next(n for n in onnx.load(path).graph.node if n.name == node).input)


def test_insert_default_output(model_path: Path):
    before = model_path.read_bytes()
    code, out, err = _run("insert", model_path, "--at", "h")
    target = model_path.with_name("model.stopgrad.onnx")
    assert code == 0 and err == ""
    assert "inserted h/StopGradient: h -> h_stopgrad (read by mul, add)" in out and str(target) in out
    assert model_path.read_bytes() == before
    assert [n.name for n in _stops(target)] == ["h/StopGradient"]
    onnx.checker.check_model(onnx.load(target), full_check=True, check_custom_domain=True)
    np.testing.assert_array_equal(_outputs(target), _outputs(model_path))


def test_consumer_pairs_with_the_preceding_at(model_path: Path, tmp_path: Path):
    out = tmp_path / "o.onnx"
    code, _, err = _run("insert", model_path, "--at", "h", "--consumer", "add", "--at", "m", "-o", out)
    assert code == 0, err
    assert _inputs(out, "mul") == ["h", "W"]
    assert _inputs(out, "add") == ["h_stopgrad", "n"]
    assert _inputs(out, "neg") == ["m_stopgrad"]  # --at m has no --consumer: every reader
    code, _, _ = _run("insert", model_path, "--at=h", "--consumer=mul", "-o", out)
    assert code == 0 and _inputs(out, "mul") == ["h_stopgrad", "W"] and _inputs(out, "add") == ["h", "n"]


def test_usage_errors(model_path: Path):
    code, _, err = _run("insert", model_path, "--consumer", "add", "--at", "h")
    assert code == 2 and "--consumer NODE must follow the --at TENSOR" in err
    code, _, err = _run("insert", model_path)
    assert code == 2 and "name the tensors to stop with --at, --match, --regex or --module" in err
    code, _, err = _run("insert", model_path, "--at", "h", "--in-place", "-o", model_path.with_name("x.onnx"))
    assert code == 2 and "either --in-place or -o" in err


def test_match_and_regex(model_path: Path, tmp_path: Path):
    out = tmp_path / "o.onnx"
    code, _, err = _run("insert", model_path, "--match", "[hm]", "-o", out)
    assert code == 0, err
    assert sorted(n.input[0] for n in _stops(out)) == ["h", "m"]
    code, _, err = _run("insert", model_path, "--regex", "^W$", "-o", out)
    assert code == 0 and [n.input[0] for n in _stops(out)] == ["W"]


def test_in_place_and_idempotence(model_path: Path):
    code, out, _ = _run("insert", model_path, "--at", "h", "--in-place")
    assert code == 0 and len(_stops(model_path)) == 1
    before = model_path.read_bytes()
    code, out, _ = _run("insert", model_path, "--at", "h", "--in-place")
    assert code == 0 and "already stopped" in out and "nothing to do" in out
    assert model_path.read_bytes() == before


def test_json_reports(model_path: Path, tmp_path: Path):
    out = tmp_path / "o.onnx"
    code, stdout, _ = _run("insert", model_path, "--at", "h", "-o", out, "--json")
    data = json.loads(stdout)
    assert code == 0 and data["inserted"][0]["output"] == "h_stopgrad" and data["wrote"] == str(out)
    code, stdout, _ = _run("list", out, "--json")
    data = json.loads(stdout)
    assert data["stop_gradients"] == [
        {
            "node": "h/StopGradient",
            "input": "h",
            "output": "h_stopgrad",
            "consumers": ["mul", "add"],
            "graph": "",
        }
    ]
    assert data["frozen_parameters"] == []  # W sits after the stop: still trained
    code, stdout, _ = _run("remove", out, "-o", tmp_path / "r.onnx", "--json")
    assert code == 0 and json.loads(stdout)["opset_removed"] is True


def test_list_text_names_frozen_parameters(model_path: Path, tmp_path: Path):
    out = tmp_path / "o.onnx"
    _run("insert", model_path, "--at", "m", "-o", out)
    code, stdout, _ = _run("list", out)
    assert code == 0
    assert "m/StopGradient: m -> m_stopgrad, read by neg" in stdout
    assert "frozen (no gradient reaches them): 1: W" in stdout


def test_remove_all_one_and_to_identity(model_path: Path, tmp_path: Path):
    stopped = tmp_path / "s.onnx"
    _run("insert", model_path, "--at", "h", "--at", "m", "-o", stopped)
    code, stdout, _ = _run("remove", stopped)
    default = tmp_path / "s.nostopgrad.onnx"
    assert code == 0 and str(default) in stdout
    assert onnx.load(default).graph == onnx.load(model_path).graph
    one = tmp_path / "one.onnx"
    code, _, _ = _run("remove", stopped, "--at", "m/StopGradient", "-o", one)
    assert code == 0 and [n.name for n in _stops(one)] == ["h/StopGradient"]
    ident = tmp_path / "id.onnx"
    code, stdout, _ = _run("remove", stopped, "--to-identity", "-o", ident)
    assert code == 0 and "by Identity" in stdout
    assert [n.op_type for n in onnx.load(ident).graph.node].count("Identity") == 2
    np.testing.assert_array_equal(_outputs(ident), _outputs(model_path))


@pytest.mark.parametrize(
    "args, message",
    [
        (["insert", "{missing}", "--at", "h"], "no such file"),
        (["insert", "{garbage}", "--at", "h"], "not a readable ONNX model"),
        (["insert", "{truncated}", "--at", "h"], "not a readable ONNX model"),
        (["insert", "{model}", "--at", "hh"], "no tensor 'hh' in the model; did you mean 'h'?"),
        (["insert", "{model}", "--at", "h", "--consumer", "nope"], "no node 'nope'"),
        (["insert", "{model}", "--match", "conv*"], "--match 'conv*' matches no tensor"),
        (["insert", "{model}", "--regex", "("], "not a valid regular expression"),
        (["insert", "{model}", "--at", "h", "-o", "{model}"], "pass --in-place to overwrite it"),
        (["insert", "{model}", "--at", "h", "-o", "{nodir}/o.onnx"], "does not exist"),
        (
            ["insert", "{model}", "--at", "h", "-o", "/proc/o.onnx"],
            "cannot write here",
        ),  # unwritable, even for root
        (["remove", "{model}", "--at", "h"], "the model has none"),
        (["list", "{missing}"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(model_path: Path, tmp_path: Path, args, message):
    (tmp_path / "garbage.onnx").write_bytes(b"this is not a model")
    (tmp_path / "truncated.onnx").write_bytes(model_path.read_bytes()[:-40])
    names = {
        "model": model_path,
        "missing": tmp_path / "missing.onnx",
        "garbage": tmp_path / "garbage.onnx",
        "truncated": tmp_path / "truncated.onnx",
        "nodir": tmp_path / "nodir",
    }
    before = {p: p.read_bytes() for p in tmp_path.glob("*.onnx")}
    code, stdout, stderr = _run(*[a.format(**names) for a in args])
    assert code == 1
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert "Traceback" not in stderr + stdout
    assert {p: p.read_bytes() for p in tmp_path.glob("*.onnx")} == before  # inputs untouched
    assert not list(tmp_path.glob("*.stopgrad.onnx"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_help_shows_examples_and_version():
    for command in ("insert", "remove", "list"):
        code, stdout, _ = _run(command, "--help")
        assert code == 0 and "Examples:" in stdout and f"onnx-stopgrad {command}" in stdout
    code, stdout, _ = _run("--version")
    assert code == 0 and __version__ in stdout


def test_python_dash_m(model_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "onnx_stopgrad", "list", str(model_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0 and "no StopGradient nodes" in result.stdout


def test_external_data_is_referenced_or_copied(tmp_path: Path):
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    model = _model()
    path = source_dir / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.bin", size_threshold=0)
    code, _, err = _run("insert", path, "--at", "h")
    assert code == 0, err
    same_dir = source_dir / "ext.stopgrad.onnx"
    assert sorted(p.name for p in source_dir.iterdir()) == ["ext.bin", "ext.onnx", "ext.stopgrad.onnx"]
    other = tmp_path / "other"
    other.mkdir()
    code, _, err = _run("insert", path, "--at", "h", "-o", other / "m.onnx")
    assert code == 0, err
    assert (other / "ext.bin").read_bytes() == (source_dir / "ext.bin").read_bytes()
    for written in (same_dir, other / "m.onnx"):
        np.testing.assert_array_equal(_outputs(written), _outputs(path))
