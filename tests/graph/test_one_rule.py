"""The two disagreements of issue 14, fixed by one rule and one walk (onnx_stopgrad.graph)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE
from onnx_stopgrad.analysis import analyze
from onnx_stopgrad.graph import NON_DIFFERENTIABLE_INPUTS, analyze_gradient_flow, differentiable_inputs


def _value(name: str, elem: int = TensorProto.FLOAT, shape: list[int] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [2] if shape is None else shape)


def _model(nodes, inputs, weights) -> onnx.ModelProto:
    # distinct values: ORT's optimizer merges equal initializers into one
    inits = [numpy_helper.from_array(np.full(2, 1.5 + i, np.float32), name) for i, name in enumerate(weights)]
    graph = helper.make_graph(nodes, "g", inputs, [_value("y")], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 9
    return model


def _pow_model() -> onnx.ModelProto:
    """y = (x * w) ** e: ``e`` reaches the loss only as Pow's exponent."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["h"]), helper.make_node("Pow", ["h", "e"], ["y"])]
    return _model(nodes, [_value("x")], ["w", "e"])


def test_pow_exponent_is_constant_in_analyze_and_artifacts(tmp_path) -> None:
    report = analyze(_pow_model(), use_onnxruntime=False)
    assert [p.name for p in report.constant] == ["e"]
    assert [p.name for p in report.unaffected] == ["w"]
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.training import generate_artifacts

    built = generate_artifacts(_pow_model(), loss="mse", artifact_directory=tmp_path, measure_removed=False)
    assert built.trainable == ("w",)
    trained = onnx.load(str(tmp_path / "training_model.onnx"))
    outputs = {name for node in trained.graph.node for name in node.output}
    assert any(n.startswith("w_grad") for n in outputs)
    assert not any(n.startswith("e_grad") for n in outputs)  # ORT's own build agrees


def test_stop_inside_an_if_body_is_the_models_own() -> None:
    then_nodes = [
        helper.make_node("Mul", ["x", "w"], ["m"]),
        helper.make_node(OP_TYPE, ["m"], ["t"], name="inner", domain=DOMAIN),
    ]
    then_branch = helper.make_graph(then_nodes, "then", [], [_value("t")])
    else_branch = helper.make_graph([helper.make_node("Add", ["x", "v"], ["e"])], "else", [], [_value("e")])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    report = analyze(
        _model(nodes, [_value("x"), _value("c", TensorProto.BOOL, [])], ["w", "v"]), use_onnxruntime=False
    )
    assert [(s.name, s.origin, s.blocks_anything) for s in report.stops] == [("inner", "model", True)]
    assert [p.name for p in report.frozen] == ["w"]
    assert [p.name for p in report.unaffected] == ["v"]
    # v trains only through the If, which ORT 1.19 cannot differentiate unless it folds it away
    assert len(report.warnings) == 1
    assert "cannot differentiate node 'If#0'" in report.warnings[0]


def test_rule_cuts_the_table_cast_and_stops() -> None:
    types = {"x": TensorProto.FLOAT, "shape": TensorProto.INT64, "i": TensorProto.INT64}
    assert differentiable_inputs(helper.make_node("Reshape", ["x", "shape"], ["r"]), types) == ["x"]
    assert differentiable_inputs(helper.make_node("Pow", ["x", "x"], ["p"]), types) == ["x"]
    assert differentiable_inputs(helper.make_node("Cast", ["x"], ["c"], to=TensorProto.INT64), types) == []
    assert differentiable_inputs(helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT16), types) == [
        "x"
    ]
    assert differentiable_inputs(helper.make_node(OP_TYPE, ["x"], ["s"], domain=DOMAIN), types) == []
    assert differentiable_inputs(helper.make_node("Add", ["x", "i"], ["a"]), types) == ["x"]
    assert NON_DIFFERENTIABLE_INPUTS["Pow"] == frozenset({1})


def test_flow_groups_partition_the_parameters() -> None:
    flow = analyze_gradient_flow(_pow_model())
    groups = [flow.trainable, flow.frozen, flow.constant, flow.unreachable]
    assert sorted(p for g in groups for p in g) == ["e", "w"]


def _if_model() -> onnx.ModelProto:
    """t = x * w; y = If(c, then: t * x, else: t + x) * v: the If reads ``t`` from outside."""
    then_branch = helper.make_graph([helper.make_node("Mul", ["t", "x"], ["a"])], "then", [], [_value("a")])
    else_branch = helper.make_graph([helper.make_node("Add", ["t", "x"], ["b"])], "else", [], [_value("b")])
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["t"]),
        helper.make_node("If", ["c"], ["z"], name="branch", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Mul", ["z", "v"], ["y"]),
    ]
    return _model(nodes, [_value("x"), _value("c", TensorProto.BOOL, [])], ["w", "v"])


def test_if_on_the_loss_path_is_refused_not_crashed(tmp_path) -> None:
    """ORT 1.19 aborted the whole process here (analyze and artifacts): now one line each."""
    from onnx_stopgrad.errors import TrainingError

    report = analyze(_if_model())  # with ORT: must not abort
    assert [p.name for p in report.unaffected] == ["v", "w"]
    assert any("cannot differentiate node 'branch'" in w for w in report.warnings)
    assert report.gradient_graph.source == "static"
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.training import generate_artifacts

    with pytest.raises(TrainingError, match="cannot differentiate node 'branch'"):
        generate_artifacts(_if_model(), loss="mse", artifact_directory=tmp_path, measure_removed=False)


def test_if_behind_a_stop_trains(tmp_path) -> None:
    """The same model with a stop at the If's output: ORT never meets the If."""
    model = _if_model()
    model.graph.node[2].input[0] = "z_stop"
    model.graph.node.insert(2, helper.make_node(OP_TYPE, ["z"], ["z_stop"], name="cut", domain=DOMAIN))
    report = analyze(model)
    assert not report.warnings
    assert [p.name for p in report.unaffected] == ["v"]
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.training import generate_artifacts

    built = generate_artifacts(model, loss="mse", artifact_directory=tmp_path, measure_removed=False)
    assert built.trainable == ("v",)


def test_pow_exponent_reached_by_a_trainable_parameter_is_one_error(tmp_path) -> None:
    """y = x ** w * w: ORT has no gradient for the exponent; both commands say so in one line."""
    from onnx_stopgrad.errors import TrainingError

    nodes = [helper.make_node("Pow", ["x", "w"], ["p"]), helper.make_node("Mul", ["p", "w"], ["y"])]
    model = _model(nodes, [_value("x")], ["w"])
    report = analyze(model, use_onnxruntime=False)
    assert any("cannot differentiate node 'Pow#0'" in w for w in report.warnings)
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.training import generate_artifacts

    with pytest.raises(TrainingError, match="cannot differentiate node 'Pow#0'"):
        generate_artifacts(model, loss="mse", artifact_directory=tmp_path, measure_removed=False)
