"""Issue 16: shape inference runs in one place, on a weight-free copy, with the full model's results."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_stopgrad
from onnx_stopgrad.analysis._shapes import infer_shapes as analysis_shapes
from onnx_stopgrad.graph import (
    KEPT_ELEMENTS,
    element_types,
    hollow_copy,
    infer_types,
    inferred_graph,
    iter_graphs,
)
from onnx_stopgrad.modules._types import tensor_types

REAL_INFER_SHAPES = onnx.shape_inference.infer_shapes
BIG = "big_weight"


def _big_weight_model() -> onnx.ModelProto:
    """x (2, 256) @ W (256, 512) -> Reshape by a shape initializer -> Resize by float scales."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((256, 512)).astype(np.float32), BIG),
        numpy_helper.from_array(np.array([2, 8, 8, 8], np.int64), "shape"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", BIG], ["h"]),
        helper.make_node("Reshape", ["h", "shape"], ["r"]),
        helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _branch(name: str, weight: str) -> onnx.GraphProto:
    """A subgraph that reads the outer ``x`` and ``weight``: MatMul then Reshape by its own shape."""
    shape = numpy_helper.from_array(np.array([-1], np.int64), f"{name}_shape")
    nodes = [
        helper.make_node("MatMul", ["x", weight], [f"{name}_h"]),
        helper.make_node("Reshape", [f"{name}_h", f"{name}_shape"], [f"{name}_out"]),
    ]
    return helper.make_graph(
        nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)], [shape]
    )


def _if_loop_model() -> onnx.ModelProto:
    """An If whose branches, and a Loop whose body, read outer weights of 96x80 elements."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((96, 80)).astype(np.float32), "w_then"),
        numpy_helper.from_array(rng.standard_normal((96, 80)).astype(np.float32), "w_else"),
        numpy_helper.from_array(np.array(3, np.int64), "trips"),
    ]
    body_nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("MatMul", ["x", "w_then"], ["body_h"]),
        helper.make_node("Add", ["carried", "body_h"], ["carried_out"]),
    ]
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        helper.make_node(
            "If",
            ["c"],
            ["picked"],
            then_branch=_branch("then", "w_then"),
            else_branch=_branch("else", "w_else"),
        ),
        helper.make_node("MatMul", ["x", "w_else"], ["start"]),
        helper.make_node("Loop", ["trips", "", "start"], ["looped"], body=body),
        helper.make_node("ReduceSum", ["looped"], ["total"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 96]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("picked", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, None),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _torch_model(kind: str, path: Path) -> onnx.ModelProto:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    if kind == "cnn":
        module: nn.Module = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 6 * 6, 4),
        )  # fmt: skip
        args, axes = (torch.randn(2, 3, 6, 6),), {"x": {0: "batch"}}
    else:
        module = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
            1,
            enable_nested_tensor=False,
        )
        args, axes = (torch.randn(2, 5, 16),), {"x": {0: "batch", 1: "seq"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
        )
    return onnx.load(str(path))


@pytest.fixture(params=["weights", "if_loop", "cnn", "transformer"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> onnx.ModelProto:
    if request.param == "weights":
        return _big_weight_model()
    if request.param == "if_loop":
        return _if_loop_model()
    return _torch_model(request.param, tmp_path / f"{request.param}.onnx")


def _full_model_types(model: onnx.ModelProto) -> dict[str, bytes]:
    """The reference: every tensor type, in every graph, from inference on the full model."""
    types: dict[str, bytes] = {}
    for graph in iter_graphs(REAL_INFER_SHAPES(model, strict_mode=False).graph):
        for value in (*graph.value_info, *graph.input, *graph.output):
            if value.type.tensor_type.elem_type:
                types.setdefault(value.name, value.type.SerializeToString())
        for tensor in graph.initializer:
            proto = helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
            types.setdefault(tensor.name, proto.SerializeToString())
    return types


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[onnx.ModelProto]:
    received: list[onnx.ModelProto] = []

    def spy(model: onnx.ModelProto, *args: object, **kwargs: object) -> onnx.ModelProto:
        received.append(model)
        return REAL_INFER_SHAPES(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy)
    return received


def _weight_elements(model: onnx.ModelProto) -> int:
    """Elements of the largest initializer, in any graph, inference was handed."""
    return max((math.prod(t.dims) for g in iter_graphs(model.graph) for t in g.initializer), default=0)


def test_inference_never_receives_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _big_weight_model()
    assert model.ByteSize() > 500_000
    received = _spy(monkeypatch)
    infer_types(model)
    element_types(model)
    inferred_graph(model)
    analysis_shapes(model)
    tensor_types(model)
    assert len(received) == 5
    for work in received:
        assert work.ByteSize() < 2_000, work.ByteSize()
        assert _weight_elements(work) <= KEPT_ELEMENTS
        big = next(v for v in work.graph.input if v.name == BIG)
        assert big.type.tensor_type.elem_type == TensorProto.FLOAT
        assert [d.dim_value for d in big.type.tensor_type.shape.dim] == [256, 512]
    assert model.ByteSize() > 500_000 and len(model.graph.initializer) == 3  # the input is untouched


def test_weight_free_types_equal_full_model_types(
    model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _full_model_types(model)
    received = _spy(monkeypatch)
    types = infer_types(model)
    assert received and all(_weight_elements(work) <= KEPT_ELEMENTS for work in received)
    assert {name: t.SerializeToString() for name, t in types.items() if name in expected} == expected
    assert element_types(model) == {name: t.tensor_type.elem_type for name, t in types.items()}
    full = {
        v.name: v.SerializeToString() for v in REAL_INFER_SHAPES(model, strict_mode=False).graph.value_info
    }
    assert {v.name: v.SerializeToString() for v in inferred_graph(model).value_info} == full


def test_the_big_weight_model_keeps_value_dependent_shapes() -> None:
    types = infer_types(_big_weight_model())
    assert [d.dim_value for d in types["r"].tensor_type.shape.dim] == [2, 8, 8, 8]  # Reshape's shape
    assert [d.dim_value for d in types["y"].tensor_type.shape.dim] == [2, 8, 16, 16]  # Resize's scales


def test_hollow_copy_keeps_parameters_as_initializers_without_data() -> None:
    model = _big_weight_model()
    work = hollow_copy(model)
    kept = {t.name: t for t in work.graph.initializer}
    assert set(kept) == {BIG, "shape", "scales"}
    big = model.graph.initializer[0]
    assert kept[BIG].data_type == TensorProto.FLOAT and list(kept[BIG].dims) == list(big.dims)
    assert not kept[BIG].raw_data and not kept[BIG].float_data
    assert kept[BIG].data_location == TensorProto.EXTERNAL
    assert kept["shape"] == model.graph.initializer[1]
    assert [v.name for v in work.graph.input] == ["x"]


def test_only_the_graph_package_runs_shape_inference() -> None:
    package = Path(onnx_stopgrad.__file__).parent
    callers = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"shape_inference\.infer_shapes\(", path.read_text())
    )
    assert callers == ["graph/_types.py"], callers
