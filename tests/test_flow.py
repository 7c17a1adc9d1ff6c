"""Gradient-flow analysis against PyTorch autograd on random graphs, plus subgraph cases."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE
from onnx_stopgrad.graph import analyze_gradient_flow

torch = pytest.importorskip("torch")


def _random_graph(seed: int):
    """A random DAG of Add/Mul/StopGradient over parameter vectors, in ONNX and as a recipe."""
    rng = random.Random(seed)
    n_params = rng.randint(2, 6)
    tensors = [f"p{i}" for i in range(n_params)]
    recipe = []  # (op, inputs, output)
    for i in range(rng.randint(3, 12)):
        op = rng.choice(["Add", "Mul", "Stop", "Stop"])
        out = f"t{i}"
        if op == "Stop":
            recipe.append((op, [rng.choice(tensors)], out))
        else:
            recipe.append((op, [rng.choice(tensors), rng.choice(tensors)], out))
        tensors.append(out)
    produced = [r[2] for r in recipe]
    outputs = rng.sample(produced, k=min(len(produced), rng.randint(1, 2)))
    return n_params, recipe, outputs


def _onnx_model(n_params, recipe, outputs) -> onnx.ModelProto:
    values = np.random.default_rng(0).uniform(0.5, 1.5, size=(n_params, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(values[i], f"p{i}") for i in range(n_params)]
    nodes = []
    for op, inputs, out in recipe:
        if op == "Stop":
            nodes.append(helper.make_node(OP_TYPE, inputs, [out], name=f"n_{out}", domain=DOMAIN))
        else:
            nodes.append(helper.make_node(op, inputs, [out], name=f"n_{out}"))
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [3]) for o in outputs]
    graph = helper.make_graph(nodes, "g", [], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _torch_grads(n_params, recipe, outputs, keep_stops: bool):
    values = np.random.default_rng(0).uniform(0.5, 1.5, size=(n_params, 3)).astype(np.float32)
    env = {f"p{i}": torch.tensor(values[i], requires_grad=True) for i in range(n_params)}
    for op, inputs, out in recipe:
        if op == "Stop":
            env[out] = env[inputs[0]].detach() if keep_stops else env[inputs[0]]
        elif op == "Add":
            env[out] = env[inputs[0]] + env[inputs[1]]
        else:
            env[out] = env[inputs[0]] * env[inputs[1]]
    loss = sum(env[o].sum() for o in outputs)
    if loss.requires_grad:
        loss.backward()
    return {f"p{i}": env[f"p{i}"].grad for i in range(n_params)}


@pytest.mark.parametrize("seed", range(60))
def test_matches_torch_autograd(seed: int) -> None:
    n_params, recipe, outputs = _random_graph(seed)
    flow = analyze_gradient_flow(_onnx_model(n_params, recipe, outputs))
    with_stops = _torch_grads(n_params, recipe, outputs, keep_stops=True)
    without = _torch_grads(n_params, recipe, outputs, keep_stops=False)

    expect_trainable = {p for p, g in with_stops.items() if g is not None}
    expect_frozen = {p for p, g in with_stops.items() if g is None and without[p] is not None}
    expect_partial = {p for p in expect_trainable if not torch.allclose(with_stops[p], without[p])}
    assert set(flow.trainable) == expect_trainable
    assert set(flow.frozen) == expect_frozen
    assert set(flow.partially_blocked) == expect_partial
    assert set(flow.unreachable) == {p for p in without if without[p] is None}
    for param in flow.frozen:
        assert flow.blocking_stops[param], param


def _stop(src: str, dst: str) -> onnx.NodeProto:
    return helper.make_node(OP_TYPE, [src], [dst], name=f"stop_{src}", domain=DOMAIN)


def test_outer_tensor_stopped_inside_if_branch() -> None:
    """W is read only inside an If branch, through a stop: frozen; V unaffected."""
    then_graph = helper.make_graph(
        [_stop("W", "w_stopped"), helper.make_node("Mul", ["w_stopped", "V"], ["r"])],
        "then",
        [],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["V"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("W", "V")],
    )
    flow = analyze_gradient_flow(helper.make_model(graph))
    assert flow.trainable == ("V",)
    assert flow.frozen == ("W",)
    assert flow.blocking_stops["W"] == ("stop_W",)


def test_targets_restrict_the_loss() -> None:
    """With an explicit target, a parameter feeding only another output is unreachable."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "A"], ["a"]), helper.make_node("Mul", ["x", "B"], ["b"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
        [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("A", "B")],
    )
    flow = analyze_gradient_flow(helper.make_model(graph), targets=["a"])
    assert flow.trainable == ("A",) and flow.unreachable == ("B",)
