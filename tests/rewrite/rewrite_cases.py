"""Hand-built models and the checks every rewrite test applies.

Numerics are checked twice where possible: in onnxruntime with the op library, and in
onnx's reference evaluator with StopGradient defined here as the identity (an independent
implementation of the forward pass).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from onnx_stopgrad import DOMAIN, OP_TYPE

OPSET = [helper.make_opsetid("", 17)]


class StopGradient(OpRun):
    """Reference forward of the op: the identity."""

    op_domain = DOMAIN

    def _run(self, x):
        return (x,)


assert StopGradient.__name__ == OP_TYPE


def make_model(nodes, inputs, outputs, initializers=(), value_info=(), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers), value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=list(OPSET), **kwargs)
    model.ir_version = 10  # ORT 1.19 loads IR <= 10
    return model


def vi(name: str, shape=(2, 3), dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(shape))


def chain_model() -> onnx.ModelProto:
    """x -> Relu(a) -> Mul(a, W)=b -> Add(a, b)=y; a is also a graph output; W an initializer."""
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "W")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Mul", ["a", "W"], ["b"], name="mul"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add", doc_string="the sum"),
    ]
    model = make_model(nodes, [vi("x")], [vi("y"), vi("a")], [weight], [vi("b")], doc_string="chain")
    helper.set_model_props(model, {"author": "tests"})
    return model


def if_model() -> onnx.ModelProto:
    """An If whose branches read the outer tensor ``h``."""
    then_graph = helper.make_graph(
        [helper.make_node("Mul", ["h", "h"], ["t_out"], name="then_mul")], "then", [], [vi("t_out")]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["e_out"], name="else_id")], "else", [], [vi("e_out")]
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("ReduceSum", ["h"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="greater"),
        helper.make_node(
            "If", ["cond"], ["branch"], name="if", then_branch=then_graph, else_branch=else_graph
        ),
        helper.make_node("Add", ["branch", "h"], ["y"], name="add"),
    ]
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    return make_model(nodes, [vi("x")], [vi("y")], [zero])


def loop_model() -> onnx.ModelProto:
    """A Loop whose body computes ``acc * w + x`` (``w`` a body-local tensor, ``x`` outer)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("Relu", ["acc_in"], ["w"], name="body_relu"),
            helper.make_node("Mul", ["acc_in", "w"], ["p"], name="body_mul"),
            helper.make_node("Add", ["p", "x"], ["acc_out"], name="body_add"),
        ],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("acc_in")],
        [vi("cond_out", [], TensorProto.BOOL), vi("acc_out")],
    )
    nodes = [
        helper.make_node("Loop", ["trips", "", "x"], ["acc"], name="loop", body=body),
        helper.make_node("Add", ["acc", "x"], ["y"], name="add"),
    ]
    trips = numpy_helper.from_array(np.array(3, dtype=np.int64), "trips")
    return make_model(nodes, [vi("x")], [vi("y")], [trips])


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 2 for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def check(model: onnx.ModelProto) -> None:
    """The ONNX checker, as strict as it gets."""
    onnx.checker.check_model(model, full_check=True, check_custom_domain=True)


def run_reference(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    return ReferenceEvaluator(model, new_ops=[StopGradient]).run(None, feeds)


def run_ort(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    """Run in onnxruntime with the op library (skips when the library is not built)."""
    ort = pytest.importorskip("onnxruntime")
    import onnx_stopgrad
    from onnx_stopgrad.errors import LibraryError

    try:
        options = onnx_stopgrad.session_options()
    except LibraryError as exc:
        pytest.skip(str(exc))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_same_outputs(source: onnx.ModelProto, rewritten: onnx.ModelProto, feeds=None) -> None:
    """Outputs (names and values) equal the source model's exactly, in both runtimes."""
    feeds = feeds if feeds is not None else feeds_for(source)
    assert [o.name for o in rewritten.graph.output] == [o.name for o in source.graph.output]
    for run in (run_reference, run_ort):
        expected = run_reference(source, feeds) if run is run_reference else _run_plain_ort(source, feeds)
        got = run(rewritten, feeds)
        assert len(got) == len(expected)
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)


def _run_plain_ort(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def stop_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [n for n in graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN]


def is_toposorted(graph: onnx.GraphProto, outer: set[str] = frozenset()) -> bool:
    known = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            if any(not is_toposorted(sub, known) for sub in subs):
                return False
        if any(name not in known for name in node.input):
            return False
        known.update(node.output)
    return True
