"""The module tree on hand-built graphs: scopes from names and metadata, outputs, globs, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad import insert_stop_gradient, module_outputs
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import InvalidModelError, TensorNotFoundError
from onnx_stopgrad.modules import ModuleTree, cut_points

F = TensorProto.FLOAT


def _weight(name: str, seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32), name
    )


def _model(nodes, outputs=("y",), initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [2, 4])],
        [helper.make_tensor_value_info(name, F, [2, 4]) for name in outputs],
        initializer=list(initializers) or [_weight(f"w{i}", i) for i in range(4)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _torchscript_like() -> onnx.ModelProto:
    """x -> enc.layer.0 (MatMul, Relu) -> enc.layer.1 (MatMul; weight through an unscoped
    Identity) -> head (MatMul) -> y, plus a head Shape reading inside enc.layer.0."""
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="/enc/layer.0/lin/MatMul"),
        helper.make_node("Relu", ["a"], ["b"], name="/enc/layer.0/act/Relu"),
        helper.make_node("Identity", ["w1"], ["w1_alias"], name="Identity_7"),
        helper.make_node("MatMul", ["b", "w1_alias"], ["c"], name="/enc/layer.1/lin/MatMul"),
        helper.make_node("Shape", ["a"], ["s"], name="/head/Shape"),
        helper.make_node("MatMul", ["c", "w2"], ["y"], name="/head/MatMul"),
    ]
    return _model(nodes)


def _dynamo_like(relative: bool) -> onnx.ModelProto:
    model = _torchscript_like()
    for node in model.graph.node:
        parts = [p for p in node.name.split("/") if p]
        if len(parts) < 2:
            continue
        chain, full = [], ""
        for part in parts[:-1]:
            full = f"{full}.{part}" if full else part
            chain.append(part if relative else full)
        scopes = ["", *chain, parts[-1].lower()]
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
        node.metadata_props.add(
            key="pkg.torch.onnx.class_hierarchy", value=repr(["Net", *["m.Mod"] * len(chain), "op"])
        )
        node.name = f"node_{parts[-1]}_{len(chain)}"
    return model


@pytest.mark.parametrize("kind", ["torchscript", "dynamo", "dynamo-relative"])
def test_tree_and_outputs(kind):
    model = {
        "torchscript": _torchscript_like(),
        "dynamo": _dynamo_like(False),
        "dynamo-relative": _dynamo_like(True),
    }[kind]
    tree = ModuleTree(model)
    assert tree.paths() == [
        "enc", "enc.layer.0", "enc.layer.0.lin", "enc.layer.0.act", "enc.layer.1", "enc.layer.1.lin", "head",
    ]  # fmt: skip
    (out,) = tree.outputs("enc.layer.0")
    assert out.tensor == "b" and len(out.readers) == 1  # the Shape read of 'a' does not count
    (out,) = tree.outputs("enc")
    assert out.tensor == "c"
    # the unscoped Identity feeding enc.layer.1's weight belongs to enc.layer.1.lin
    identity = next(i for i, e in enumerate(tree.entries) if e.node.op_type == "Identity")
    assert identity in tree.modules["enc.layer.1.lin"].nodes
    (out,) = tree.outputs("head")
    assert out.graph_output and out.readers == ()


def test_insert_module_stops_only_readers_outside():
    model = _torchscript_like()
    model.graph.node.insert(2, helper.make_node("Sigmoid", ["b"], ["b2"], name="/enc/layer.0/act/Sigmoid"))
    model.graph.node[-1].input[0] = "c"
    model.graph.node.append(helper.make_node("Add", ["y0", "b2"], ["y"], name="/head/Add"))
    model.graph.node[-2].output[0] = "y0"
    new, report = insert_stop_gradient(model, module="enc.layer.0.act")
    readers = {i.tensor: i.consumers for i in report.inserted}
    assert readers == {"b": ("/enc/layer.1/lin/MatMul",), "b2": ("/head/Add",)}
    # inside enc.layer.0 nothing changed; the caller's model neither
    sigmoid = next(n for n in new.graph.node if n.name == "/enc/layer.0/act/Sigmoid")
    assert list(sigmoid.input) == ["b"]
    assert not any(n.op_type == "StopGradient" for n in model.graph.node)


def test_nested_and_glob_names():
    tree = ModuleTree(_torchscript_like())
    assert tree.resolve(["enc.layer.*"]) == ["enc.layer.0", "enc.layer.1"]
    assert tree.resolve(["enc.**"]) == [p for p in tree.paths() if p.startswith("enc.")]
    assert tree.resolve(["/enc/layer.1/"]) == ["enc.layer.1"]
    assert tree.resolve(["enc.layer.[1]"]) == ["enc.layer.1"]
    _, report = insert_stop_gradient(_torchscript_like(), module=["enc.layer.0", "enc"])
    assert {i.tensor for i in report.inserted} == {"b", "c"}


def test_unknown_module_suggests_modules_not_parameters():
    model = _torchscript_like()
    with pytest.raises(TensorNotFoundError, match=r"close module paths: .*enc\.layer\.0") as info:
        insert_stop_gradient(model, module="enc.layer.O")
    assert "w0" not in str(info.value)
    with pytest.raises(TensorNotFoundError, match="whole model"):
        insert_stop_gradient(model, module="")


def test_module_without_outputs_and_module_ending_the_model():
    model = _torchscript_like()
    model.graph.node.append(helper.make_node("Relu", ["a"], ["dead"], name="/probe/Relu"))
    with pytest.raises(InvalidModelError, match="has no outputs"):
        insert_stop_gradient(model, module="probe")
    with pytest.raises(InvalidModelError, match="ends the model"):
        insert_stop_gradient(model, module="head")


def test_no_scope_information_points_to_at():
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="mm"),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    model = _model(nodes)
    with pytest.raises(TensorNotFoundError, match=r"no module scope information.*--at"):
        insert_stop_gradient(model, module="mm")
    with pytest.raises(TensorNotFoundError, match="--at"):
        cut_points(model)


def test_subgraph_nodes_belong_to_their_module():
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["b", "b"], ["t"], name="/head/Mul")], "then", [],
        [helper.make_tensor_value_info("t", F, None)],
    )  # fmt: skip
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["b"], ["e"], name="/head/Neg")], "else", [],
        [helper.make_tensor_value_info("e", F, None)],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="/enc/MatMul"),
        helper.make_node("Relu", ["a"], ["b"], name="/enc/Relu"),
        helper.make_node("ReduceSum", ["x"], ["r"], name="/head/ReduceSum", keepdims=0),
        helper.make_node("Cast", ["r"], ["cond"], name="/head/Cast", to=TensorProto.BOOL),
        helper.make_node(
            "If", ["cond"], ["y"], name="If_3", then_branch=then_branch, else_branch=else_branch
        ),
    ]
    model = _model(nodes)
    tree = ModuleTree(model)
    inner = [i for i, e in enumerate(tree.entries) if e.depth]
    assert set(inner) <= set(tree.modules["head"].nodes)
    (out,) = module_outputs(model, "enc")
    assert out.tensor == "b" and set(out.readers) == {"/head/Mul", "/head/Neg"}
    new, _ = insert_stop_gradient(model, module="enc")
    branches = {a.name: a.g for a in new.graph.node[-1].attribute}
    assert list(branches["then_branch"].node[0].input) == ["b_stopgrad", "b_stopgrad"]
    assert list(branches["else_branch"].node[0].input) == ["b_stopgrad"]


def test_cli_insert_module_and_points(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_torchscript_like(), str(path))
    runner = CliRunner()
    result = runner.invoke(main, ["insert", str(path), "--module", "enc.layer.0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["inserted"][0]["tensor"] == "b"
    result = runner.invoke(main, ["points", str(path), "--json"])
    assert result.exit_code == 0, result.output
    points = {p["path"]: p for p in json.loads(result.output)["points"]}
    assert points["enc.layer.0"]["frozen"] == 1 and points["enc"]["frozen"] == 2
    assert points["enc.layer.0"]["outputs"][0]["shape"] == [2, 4]
    text = runner.invoke(main, ["points", str(path), "--depth", "1"]).output
    assert "enc.layer.0" not in text and "deeper modules" in text
    result = runner.invoke(main, ["insert", str(path), "--module", "enc.layr.0"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "close module paths" in result.output


def test_module_twice_is_skipped_the_second_time_and_at_wins():
    once, first = insert_stop_gradient(_torchscript_like(), module="enc.layer.0")
    twice, second = insert_stop_gradient(once, module="enc.layer.0")
    assert first.inserted and not second.inserted and second.skipped[0].reason == "already stopped"
    assert twice == once
    model = _torchscript_like()
    model.graph.node.append(helper.make_node("Relu", ["b"], ["b3"], name="/enc/layer.0/act/Relu_2"))
    model.graph.node[-2].output[0] = "y0"
    model.graph.node.append(helper.make_node("Add", ["y0", "b3"], ["y"], name="/head/Add"))
    _, report = insert_stop_gradient(model, at=["b"], module="enc.layer.0")
    (stop,) = [i for i in report.inserted if i.tensor == "b"]
    assert set(stop.consumers) == {
        "/enc/layer.1/lin/MatMul",
        "/enc/layer.0/act/Relu_2",
    }  # --at b: every reader


def test_torchscript_sequential_children_are_named_like_pytorch():
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="/backbone/layer1/layer1.0/conv1/MatMul"),
        helper.make_node("Relu", ["a"], ["b"], name="/backbone/layer1/layer1.1/Relu"),
        helper.make_node("MatMul", ["b", "w1"], ["y"], name="/head/MatMul"),
    ]
    tree = ModuleTree(_model(nodes))
    assert tree.paths() == [
        "backbone", "backbone.layer1", "backbone.layer1.0", "backbone.layer1.0.conv1", "backbone.layer1.1",
        "head",
    ]  # fmt: skip
    assert tree.modules["backbone.layer1.0"].parent == "backbone.layer1"


def test_tf2onnx_style_names_without_leading_slash():
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="model/dense/MatMul"),
        helper.make_node("Relu", ["a"], ["b"], name="model/dense/Relu"),
        helper.make_node("MatMul", ["b", "w1"], ["y"], name="model/dense_1/MatMul"),
    ]
    tree = ModuleTree(_model(nodes))
    assert tree.paths() == ["model", "model.dense", "model.dense_1"]
    assert tree.resolve(["model/dense"]) == ["model.dense"]
    (out,) = tree.outputs("model.dense")
    assert out.tensor == "b"
