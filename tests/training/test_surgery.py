"""training/_surgery.py: the linear topological sort, and stops ORT's build leaves dangling."""

from __future__ import annotations

import random
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE
from onnx_stopgrad.errors import TrainingError
from onnx_stopgrad.training._surgery import toposort


def _chain(length: int) -> onnx.GraphProto:
    nodes = [
        helper.make_node("Neg", [f"t{i - 1}" if i else "x"], [f"t{i}"], name=f"n{i}") for i in range(length)
    ]
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info(f"t{length - 1}", TensorProto.FLOAT, [1])
    return helper.make_graph(nodes, "chain", [value], [out])


def _is_sorted(graph: onnx.GraphProto) -> bool:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        if not set(node.input) <= available:
            return False
        available.update(node.output)
    return True


def test_reversed_chain_sorts_in_linear_time() -> None:
    graph = _chain(16_000)
    nodes = list(graph.node)[::-1]
    del graph.node[:]
    graph.node.extend(nodes)
    start = time.perf_counter()
    toposort(graph)
    assert time.perf_counter() - start < 3.0  # the old repeated-pass sort took 10.6 s
    assert _is_sorted(graph)
    assert [n.name for n in graph.node] == [f"n{i}" for i in range(16_000)]


def test_shuffled_graph_sorted_and_valid_order_kept() -> None:
    graph = _chain(50)
    already = [n.name for n in graph.node]
    toposort(graph)
    assert [n.name for n in graph.node] == already  # a valid order is left alone
    nodes = list(graph.node)
    random.Random(0).shuffle(nodes)
    del graph.node[:]
    graph.node.extend(nodes)
    toposort(graph)
    assert _is_sorted(graph)


def test_cycle_is_one_training_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("Neg", ["b"], ["a"]), helper.make_node("Neg", ["a"], ["b"])], "cycle", [], []
    )
    with pytest.raises(TrainingError, match="cycle or undefined"):
        toposort(graph)


def test_unused_stop_on_an_initializer_survives_the_build(tmp_path) -> None:
    """ORT drops an initializer only a dead stop reads; the artifacts keep the stop and it."""
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.training import generate_artifacts

    weights = [
        numpy_helper.from_array(np.full(2, v, np.float32), n) for n, v in (("w", 0.5), ("unused", 2.0))
    ]
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["y"], name="mul"),
        helper.make_node(OP_TYPE, ["unused"], ["dead"], name="dead_stop", domain=DOMAIN),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], weights,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 9
    report = generate_artifacts(model, loss="mse", artifact_directory=tmp_path, measure_removed=False)
    assert report.trainable == ("w",)
    for kind in ("training", "eval"):
        built = onnx.load(str(tmp_path / f"{kind}_model.onnx"))
        assert "dead_stop" in [n.name for n in built.graph.node]
        onnx.checker.check_model(built)
