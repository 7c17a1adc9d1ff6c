"""The error hierarchy is used as documented: the base class is never raised itself, each
report has ``to_dict``, and each kind of user error keeps its class."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_stopgrad
from onnx_stopgrad import errors
from onnx_stopgrad.errors import InvalidOptionError, ModelSaveError, OutputIsInputError, StopGradError

PACKAGE = Path(onnx_stopgrad.__file__).parent


def _raised_names(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            found.append((node.lineno, name))
    return found


def test_base_class_is_never_raised_bare() -> None:
    bare = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in _raised_names(path)
        if name == "StopGradError"
    ]
    assert not bare


def test_every_error_class_is_a_documented_user_error() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(cls, StopGradError) and cls.__doc__ for cls in classes)
    assert issubclass(OutputIsInputError, ModelSaveError)  # callers catching ModelSaveError keep working


def test_reports_have_to_dict() -> None:
    from onnx_stopgrad.analysis import AnalysisReport
    from onnx_stopgrad.passes import InsertReport, ListReport, RemoveReport
    from onnx_stopgrad.training import ArtifactsReport
    from onnx_stopgrad.visual import DrawReport

    for report in (AnalysisReport, InsertReport, ListReport, RemoveReport, ArtifactsReport, DrawReport):
        assert callable(getattr(report, "to_dict", None)), report
    artifacts = ArtifactsReport(Path("d"), ("a",), ("w",), (), ("s",), (), 5, 9, ("x",))
    data = json.loads(json.dumps(artifacts.to_dict()))
    assert data["directory"] == "d" and data["gradient_nodes_removed"] == 4
    assert set(data) == {f.name for f in dataclasses.fields(artifacts)} | {"gradient_nodes_removed"}


def _model(path: Path) -> Path:
    weight = numpy_helper.from_array(np.ones(2, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_drawing_over_the_input_is_output_is_input_error(tmp_path) -> None:
    from onnx_stopgrad.visual import draw

    model = _model(tmp_path / "m.dot")  # an ONNX file with a picture's suffix
    with pytest.raises(OutputIsInputError):
        draw(model, model)
    assert onnx.load(str(model)).graph.node[0].op_type == "Mul"  # untouched


def test_invalid_regex_is_an_option_error(tmp_path) -> None:
    from onnx_stopgrad.passes import select_tensors

    with pytest.raises(InvalidOptionError, match="not a valid regular expression"):
        select_tensors(onnx.load(str(_model(tmp_path / "m.onnx"))), regexes=["("])
