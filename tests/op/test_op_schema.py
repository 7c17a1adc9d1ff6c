"""The onnx.defs schema: registered on import, idempotent, checker and shape inference."""

from __future__ import annotations

import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION, schema


def _model(elem_type: int, shape, n_inputs: int = 1) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(f"x{i}", elem_type, shape) for i in range(n_inputs)]
    nodes = [
        helper.make_node(OP_TYPE, [i.name for i in inputs], ["s"], domain=DOMAIN),
        helper.make_node("Identity", ["s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", elem_type, shape)])
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(DOMAIN, OPSET_VERSION)],
        ir_version=10,
    )


def test_registered_on_import_and_idempotent():
    assert onnx.defs.has(OP_TYPE, OPSET_VERSION, DOMAIN)
    schema.register()
    schema.register()
    registered = onnx.defs.get_schema(OP_TYPE, OPSET_VERSION, DOMAIN)
    assert (registered.name, registered.domain, registered.since_version) == (OP_TYPE, DOMAIN, OPSET_VERSION)
    assert len(registered.inputs) == 1 and len(registered.outputs) == 1


def test_type_constraint_covers_every_runtime_type():
    allowed = set(onnx.defs.get_schema(OP_TYPE, OPSET_VERSION, DOMAIN).type_constraints[0].allowed_type_strs)
    for name in ["float", "double", "float16", "bfloat16", "string", "bool"]:
        assert f"tensor({name})" in allowed
    for bits in [8, 16, 32, 64]:
        assert f"tensor(int{bits})" in allowed and f"tensor(uint{bits})" in allowed


@pytest.mark.parametrize(
    "elem_type",
    [TensorProto.FLOAT, TensorProto.BFLOAT16, TensorProto.STRING, TensorProto.BOOL, TensorProto.UINT64],
)
def test_full_checker_passes(elem_type):
    onnx.checker.check_model(_model(elem_type, ["batch", 3]), full_check=True, check_custom_domain=True)


def test_checker_rejects_wrong_arity():
    """The schema is really consulted: two inputs violate it."""
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(
            _model(TensorProto.FLOAT, [2], n_inputs=2), full_check=True, check_custom_domain=True
        )


@pytest.mark.parametrize(
    ("elem_type", "shape"),
    [
        (TensorProto.FLOAT16, ["batch", 3, 7]),
        (TensorProto.INT64, []),
        (TensorProto.STRING, [0]),
        (TensorProto.DOUBLE, ["n", "n"]),
    ],
)
def test_shape_inference_carries_type_and_shape(elem_type, shape):
    model = _model(elem_type, shape)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    (stopped,) = [v for v in inferred.graph.value_info if v.name == "s"]
    assert stopped.type == model.graph.input[0].type


def test_shape_inference_without_input_shape_leaves_rank_unknown():
    model = _model(TensorProto.FLOAT, None)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    (stopped,) = [v for v in inferred.graph.value_info if v.name == "s"]
    assert stopped.type.tensor_type.elem_type == TensorProto.FLOAT
    assert not stopped.type.tensor_type.HasField("shape")
