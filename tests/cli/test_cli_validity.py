"""Inputs the ONNX checker rejects but ONNX Runtime runs: accepted with one warning, the
output no less valid; ``--strict`` refuses them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from onnx_stopgrad import DOMAIN
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import InvalidModelError
from onnx_stopgrad.passes import insert_stop_gradient
from onnx_stopgrad.passes._validity import check_output, checker_problem


class StopGradient(OpRun):
    op_domain = DOMAIN

    def _run(self, x):
        return (x,)


def _untyped_output_model() -> onnx.ModelProto:
    """y = relu(x * w) whose graph output has no type (as in published Llama-2 exports)."""
    untyped = onnx.ValueInfoProto()
    untyped.name = "y"
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["h"], name="mul"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    weight = numpy_helper.from_array(np.array([0.5, -2.0], np.float32), "w")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [untyped], [weight]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_accepted_with_one_warning_and_no_new_problem(tmp_path) -> None:
    source, target = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_untyped_output_model(), source)
    problem = checker_problem(source)
    assert problem is not None and "type" in problem
    result = CliRunner().invoke(main, ["insert", str(source), "--at", "h", "-o", str(target)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "ONNX checker rejects the input" in warnings[0]
    written = onnx.load(str(target))
    assert checker_problem(written) == problem  # the input's problem, and no other
    x = np.array([1.0, 3.0], np.float32)
    got = ReferenceEvaluator(written, new_ops=[StopGradient]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.maximum(x * np.array([0.5, -2.0], np.float32), 0))


def test_strict_refuses(tmp_path) -> None:
    source, target = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_untyped_output_model(), source)
    result = CliRunner().invoke(main, ["remove", str(source), "-o", str(target), "--strict"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "ONNX checker rejects the model" in result.stderr and "--strict" in result.stderr
    assert not target.exists()


def test_path_api_accepts_too(tmp_path) -> None:
    source = tmp_path / "m.onnx"
    onnx.save(_untyped_output_model(), source)
    model, report = insert_stop_gradient(str(source), ["h"])
    assert report.modified and checker_problem(model) == checker_problem(source)


def test_a_new_problem_is_refused() -> None:
    model = _untyped_output_model()
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node.append(
        helper.make_node("StopGradient", ["x", "w"], ["s"], domain=DOMAIN)
    )  # one input only
    with pytest.raises(InvalidModelError, match="in a new way"):
        check_output(bad, checker_problem(model))
    check_output(model, checker_problem(model))  # the same problem: fine


def test_an_unusable_opset_version_is_one_error_not_a_traceback() -> None:
    """Found by the fuzzer: an opset version past 2^31 broke the node check with a TypeError."""
    model = _untyped_output_model()
    model.opset_import[0].version = 2**40
    with pytest.raises(InvalidModelError):
        check_output(model, checker_problem(model))
