"""Small hand-built models for the analyze/show tests, with their torch twins."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE

RNG = np.random.default_rng(0)
SHAPES = {"W1": (4, 8), "W2": (8, 3), "Wa": (8, 2), "b1": (8,)}


def _init(name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(SHAPES[name]).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 10
    return model


def _stop(src: str, dst: str, name: str) -> onnx.NodeProto:
    return helper.make_node(OP_TYPE, [src], [dst], name=name, domain=DOMAIN)


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])


def frozen_backbone(with_stop: bool = True) -> onnx.ModelProto:
    """y = relu(x @ W1 + b1) -stop-> @ W2: W1, b1 frozen, W2 trains."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name="/enc/mm"),
        helper.make_node("Add", ["h0", "b1"], ["h"], name="/enc/add"),
        helper.make_node("Relu", ["h"], ["r"], name="/enc/relu"),
    ]
    feature = "r"
    if with_stop:
        nodes.append(_stop("r", "rs", "/enc/stop"))
        feature = "rs"
    nodes.append(helper.make_node("MatMul", [feature, "W2"], ["y"], name="/head/mm"))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    return _model(nodes, [X], [out], [_init(n) for n in ("W1", "b1", "W2")])


def shared_weight() -> onnx.ModelProto:
    """W1 read twice: once behind a stop (target branch), once directly -> partially blocked.

    y = relu(x @ W1) @ W2 + stop(relu(x2 @ W1)) @ W2 ; aux = stop(relu(x @ W1)) @ Wa
    """
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="/online/mm"),
        helper.make_node("Relu", ["h"], ["r"], name="/online/relu"),
        helper.make_node("MatMul", ["r", "W2"], ["q"], name="/online/head"),
        helper.make_node("MatMul", ["x2", "W1"], ["h2"], name="/target/mm"),
        helper.make_node("Relu", ["h2"], ["r2"], name="/target/relu"),
        _stop("r2", "r2s", "/target/stop"),
        helper.make_node("MatMul", ["r2s", "W2"], ["q2"], name="/target/head"),
        helper.make_node("Add", ["q", "q2"], ["y"], name="/sum"),
        _stop("r", "rs", "/aux/stop"),
        helper.make_node("MatMul", ["rs", "Wa"], ["aux"], name="/aux/mm"),
    ]
    outs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["batch", 2]),
    ]
    return _model(nodes, [X, x2], outs, [_init(n) for n in ("W1", "W2", "Wa")])


def useless_stops() -> onnx.ModelProto:
    """A stop on the graph input (nothing behind it) and one on the only path: nothing trains."""
    nodes = [
        _stop("x", "xs", "/in/stop"),
        helper.make_node("MatMul", ["xs", "W1"], ["h"], name="/enc/mm"),
        _stop("h", "hs", "/enc/stop"),
        helper.make_node("Relu", ["hs"], ["y"], name="/out/relu"),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    return _model(nodes, [X], [out], [_init("W1")])


def torch_grads(model: onnx.ModelProto, detach: bool) -> dict[str, object]:
    """Gradients of sum(outputs) w.r.t. every initializer, by PyTorch autograd on the same graph."""
    import torch

    env = {
        t.name: torch.tensor(numpy_helper.to_array(t), requires_grad=True) for t in model.graph.initializer
    }
    params = dict(env)
    for value in model.graph.input:
        env[value.name] = torch.ones(2, 4)
    ops = {"MatMul": torch.matmul, "Add": torch.add, "Relu": torch.relu}
    for node in model.graph.node:
        args = [env[name] for name in node.input]
        if node.op_type == OP_TYPE:
            env[node.output[0]] = args[0].detach() if detach else args[0]
        else:
            env[node.output[0]] = ops[node.op_type](*args)
    loss = sum(env[o.name].sum() for o in model.graph.output)
    if loss.requires_grad:
        loss.backward()
    return {name: tensor.grad for name, tensor in params.items()}
