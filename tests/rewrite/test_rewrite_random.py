"""Random graphs, random targets and consumer subsets: every invariant at once."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from rewrite_cases import assert_same_outputs, check, is_toposorted, make_model, stop_nodes, vi

from onnx_stopgrad import insert_stop_gradient, remove_stop_gradient

UNARY = ["Relu", "Neg", "Abs", "Sigmoid"]
BINARY = ["Add", "Mul", "Sub"]


def _random_model(rng: random.Random) -> onnx.ModelProto:
    tensors = ["x0", "x1"]
    initializers = []
    for i in range(rng.randint(1, 3)):
        name = f"w{i}"
        initializers.append(numpy_helper.from_array(np.full((2, 3), 0.5 + i, np.float32), name))
        tensors.append(name)
    nodes = []
    for i in range(rng.randint(3, 12)):
        op = rng.choice(UNARY + BINARY)
        arity = 1 if op in UNARY else 2
        inputs = [rng.choice(tensors) for _ in range(arity)]
        nodes.append(helper.make_node(op, inputs, [f"t{i}"], name=f"n{i}"))
        tensors.append(f"t{i}")
    outputs = sorted({f"t{len(nodes) - 1}", rng.choice(tensors[3:])} - {""})
    return make_model(nodes, [vi("x0"), vi("x1")], [vi(name) for name in outputs], initializers)


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs(seed: int):
    rng = random.Random(seed)
    source = _random_model(rng)
    readers: dict[str, list[str]] = {}
    for node in source.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    targets = rng.sample(sorted(readers), k=rng.randint(1, len(readers)))
    consumers = {
        t: rng.sample(readers[t], k=rng.randint(1, len(readers[t]))) for t in targets if rng.random() < 0.4
    }
    model, report = insert_stop_gradient(source, targets, consumers)
    check(model)
    assert is_toposorted(model.graph)
    assert len(stop_nodes(model.graph)) == len(report.inserted) == len(targets)
    for item in report.inserted:  # exactly the asked-for edges now read the stopped copy
        expected = set(consumers.get(item.tensor, readers[item.tensor]))
        actual = {n.name for n in model.graph.node if item.output in n.input}
        assert actual == expected == set(item.consumers)
    assert_same_outputs(source, model)
    again, second = insert_stop_gradient(model, targets, consumers)
    assert not second.modified and again.SerializeToString() == model.SerializeToString()
    restored, _ = remove_stop_gradient(model)
    assert restored.graph == source.graph
