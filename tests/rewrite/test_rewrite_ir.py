"""The passes as onnx_ir passes, and the functions given an onnx_ir.Model (returned in kind)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from onnx_stopgrad import DOMAIN, OP_TYPE
from onnx_stopgrad.passes import insert_stop_gradient, list_stop_gradients, remove_stop_gradient

ir = pytest.importorskip("onnx_ir")
from onnx_stopgrad.passes.ir import InsertStopGradientPass, RemoveStopGradientPass


class StopGradient(OpRun):
    op_domain = DOMAIN

    def _run(self, x):
        return (x,)


def _model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.array([0.5, -1.5], np.float32), "w")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["h"], name="mul"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto) -> np.ndarray:
    x = np.array([2.0, 3.0], np.float32)
    return ReferenceEvaluator(model, new_ops=[StopGradient]).run(None, {"x": x})[0]


def test_passes_compose_in_a_pass_manager() -> None:
    original = ir.serde.deserialize_model(_model())
    inserted = ir.passes.PassManager([InsertStopGradientPass(["h"])])(original)
    assert inserted.modified
    assert [n.op_type for n in original.graph] == ["Mul", "Relu"]  # functional: input unchanged
    proto = ir.serde.serialize_model(inserted.model)
    assert [n.op_type for n in proto.graph.node] == ["Mul", OP_TYPE, "Relu"]
    onnx.checker.check_model(proto, full_check=True, check_custom_domain=True)
    np.testing.assert_array_equal(_run(proto), _run(_model()))
    removed = RemoveStopGradientPass()(inserted.model)
    assert removed.modified and removed.report is not None and len(removed.report.removed) == 1
    assert [n.op_type for n in removed.model.graph] == ["Mul", "Relu"]
    again = RemoveStopGradientPass()(removed.model)
    assert not again.modified


def test_functions_return_an_ir_model_for_an_ir_model() -> None:
    model, report = insert_stop_gradient(ir.serde.deserialize_model(_model()), ["h"])
    assert isinstance(model, ir.Model) and report.modified
    assert list_stop_gradients(model).stops[0].input == "h"
    plain, _ = remove_stop_gradient(model)
    assert isinstance(plain, ir.Model)
    assert [n.op_type for n in plain.graph] == ["Mul", "Relu"]
