"""Missing runtimes and optional dependencies: one line naming the extra to install; the
[training] extra leaves ONNX Runtime training out where it has no wheels (Python 3.13+)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

import onnx_stopgrad
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import LibraryError, TrainingError

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name: [Requirement(r) for r in reqs] for name, reqs in project["optional-dependencies"].items()}


@pytest.mark.parametrize("extra", ["training", "training-cuda"])
def test_training_runtime_only_where_it_has_wheels(extra):
    runtime = [r for r in _extras()[extra] if r.name.startswith("onnxruntime-training")]
    assert len(runtime) == 1 and runtime[0].marker is not None
    for python, wanted in (("3.10", True), ("3.12", True), ("3.13", False), ("3.14", False)):
        assert runtime[0].marker.evaluate({"python_version": python}) is wanted, python


def test_session_options_without_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(
        LibraryError, match=r"onnxruntime is not installed .*pip install 'onnx-stopgrad\[cpu\]'"
    ):
        onnx_stopgrad.session_options()


def test_training_on_python_313_says_why(monkeypatch):
    from onnx_stopgrad.training._ort import ort_artifacts

    monkeypatch.setitem(sys.modules, "onnxruntime.training", None)
    monkeypatch.setattr(sys, "version_info", (3, 13, 0, "final", 0))
    with pytest.raises(TrainingError, match=r"not available for Python 3\.13 .*Python 3\.10-3\.12") as caught:
        ort_artifacts()
    assert "\n" not in str(caught.value)


def test_train_without_tqdm_names_the_extra(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime.training")
    monkeypatch.setitem(sys.modules, "tqdm", None)
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: tqdm is not installed (") and line.endswith(
        ": pip install 'onnx-stopgrad[training]'"
    )


def test_train_without_onnxruntime_training_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime.training", None)
    result = CliRunner().invoke(main, ["train", str(tmp_path), "--data", str(tmp_path / "d.npz")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "pip install 'onnx-stopgrad[training]'" in line


def test_torch_helpers_without_torch_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "onnx_stopgrad.torch", raising=False)
    with pytest.raises(
        ImportError, match=r"onnx_stopgrad\.torch needs PyTorch .*pip install 'onnx-stopgrad\[training\]'"
    ):
        import onnx_stopgrad.torch  # noqa: F401
