"""Broken models are refused with one line, never rewritten (onnx.checker is the reference).

Each case breaks a small valid model in one way; onnx.checker must reject the broken model
(so the breakage is real) and insert, remove and list must raise InvalidModelError whose
one-line message names the offending node or tensor. The valid models are accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import AttributeProto, TensorProto, helper, numpy_helper
from rewrite_cases import make_model

from onnx_stopgrad import DOMAIN, OP_TYPE, insert_stop_gradient, list_stop_gradients, remove_stop_gradient
from onnx_stopgrad.errors import InvalidModelError
from onnx_stopgrad.graph import MAX_DEPTH

F = TensorProto.FLOAT


def _mlp() -> onnx.ModelProto:
    """x -> MatMul(W) -> h -> Relu -> r -> StopGradient -> s -> Add(b) -> y (checker-clean)."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node(OP_TYPE, ["r"], ["s"], name="stop", domain=DOMAIN),
        helper.make_node("Add", ["s", "b"], ["y"], name="add"),
    ]
    weights = [
        numpy_helper.from_array(np.ones((2, 2), np.float32), "W"),
        numpy_helper.from_array(np.ones(2, np.float32), "b"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 2])],
        [helper.make_tensor_value_info("y", F, [1, 2])],
        weights,
    )
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model


def _set_input(index: int, slot: int, name: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        model.graph.node[index].input[slot] = name

    return edit


def _swap_first_two(model: onnx.ModelProto) -> None:
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([nodes[1], nodes[0], *nodes[2:]])


def _second_output(model: onnx.ModelProto) -> None:
    model.graph.node[1].output.append("r")


def _tensor(edit: Callable[[onnx.TensorProto], None]) -> Callable[[onnx.ModelProto], None]:
    def apply(model: onnx.ModelProto) -> None:
        edit(model.graph.initializer[0])

    return apply


def _duplicate_initializer(model: onnx.ModelProto) -> None:
    model.graph.initializer.add().CopyFrom(model.graph.initializer[1])


def _duplicate_input(model: onnx.ModelProto) -> None:
    model.graph.input.add().CopyFrom(model.graph.input[0])


def _set(field: str, value) -> Callable[[onnx.TensorProto], None]:
    def edit(tensor: onnx.TensorProto) -> None:
        setattr(tensor, field, value)

    return edit


def _neg_dim(tensor: onnx.TensorProto) -> None:
    tensor.dims[0] = -2


def _float_data_short(tensor: onnx.TensorProto) -> None:
    tensor.ClearField("raw_data")
    tensor.float_data.extend([1.0, 2.0, 3.0])  # W is 2x2


# name -> (breakage, text the message must contain)
BROKEN: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "dangling": (_set_input(1, 0, "nobody"), "node 'relu' of the main graph reads 'nobody', which no node"),
    "cycle": (
        _set_input(0, 0, "y"),
        "node 'mm' of the main graph reads 'y', which only this or a later node",
    ),
    "unsorted": (_swap_first_two, "node 'relu' of the main graph reads 'h', which only this or a later node"),
    "self_loop": (
        _set_input(1, 0, "r"),
        "node 'relu' of the main graph reads 'r', which only this or a later",
    ),
    "two_producers": (
        lambda m: m.graph.node[3].output.__setitem__(0, "h"),
        "tensor 'h' of the main graph is defined twice",
    ),
    "output_is_initializer": (
        lambda m: m.graph.node[0].output.__setitem__(0, "b"),
        "tensor 'b' of the main graph is defined twice",
    ),
    "output_is_input": (
        lambda m: m.graph.node[1].output.__setitem__(0, "x"),
        "tensor 'x' of the main graph is defined twice",
    ),
    "one_node_writes_twice": (_second_output, "node 'relu' of the main graph writes one tensor twice"),
    "duplicate_initializer": (_duplicate_initializer, "named 'b', like another one"),
    "duplicate_input": (_duplicate_input, "graph input 'x' of the main graph is declared twice"),
    "output_undefined": (
        lambda m: setattr(m.graph.output[0], "name", "ghost"),
        "graph output 'ghost' is not",
    ),
    "raw_data_short": (
        _tensor(_set("raw_data", b"\0" * 12)),
        "initializer 'W' of the main graph has 12 bytes of raw_data; its shape and type need 16",
    ),
    "string_in_raw_data": (
        _tensor(_set("data_type", TensorProto.STRING)),
        "initializer 'W' of the main graph stores strings in raw_data",
    ),
    "undefined_type": (_tensor(_set("data_type", TensorProto.UNDEFINED)), "has the element type UNDEFINED"),
    "negative_dim": (_tensor(_neg_dim), "has a negative dimension (-2)"),
    "float_data_short": (_tensor(_float_data_short), "has 3 values in float_data; its shape needs 4"),
}

CALLS = {
    "insert": lambda model: insert_stop_gradient(model, "h"),
    "remove": lambda model: remove_stop_gradient(model),
    "list": list_stop_gradients,
}


def test_the_unbroken_model_is_accepted() -> None:
    model = _mlp()
    onnx.checker.check_model(model)
    for call in CALLS.values():
        call(model)


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_broken_model_is_refused_naming_the_culprit(breakage: str, call: str) -> None:
    model = _mlp()
    edit, expected = BROKEN[breakage]
    edit(model)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    before = model.SerializeToString()
    with pytest.raises(InvalidModelError) as caught:
        CALLS[call](model)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert model.SerializeToString() == before  # the caller's proto is untouched


# --- subgraphs ------------------------------------------------------------------------------


def _if_model(branch_reads: str, late: bool = False) -> onnx.ModelProto:
    """``If`` whose then-branch reads ``branch_reads`` from the main graph."""
    then = helper.make_graph(
        [helper.make_node("Relu", [branch_reads], ["t"], name="inner")],
        "then",
        [],
        [helper.make_tensor_value_info("t", F, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["e"], name="inner_e")],
        "else",
        [],
        [helper.make_tensor_value_info("e", F, [2])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="pre"),
        helper.make_node("If", ["c"], ["z"], name="if", then_branch=then, else_branch=other),
        helper.make_node("Relu", ["z"], ["late"], name="post"),
    ]
    if late:
        nodes[2].output[0] = "late"
    return make_model(
        nodes,
        [
            helper.make_tensor_value_info("x", F, [2]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("late", F, [2])],
    )


def test_subgraph_reading_an_earlier_outer_tensor_is_accepted() -> None:
    model = _if_model("a")
    onnx.checker.check_model(model)
    out, report = insert_stop_gradient(model, "a")
    assert len(report.inserted) == 1
    onnx.checker.check_model(out)


@pytest.mark.parametrize(
    "name,why",
    [
        ("late", "only this or a later node"),
        ("z", "only this or a later node"),
        ("nowhere", "no node, graph input or initializer"),
    ],
)
def test_subgraph_reading_a_later_or_missing_outer_tensor_is_refused(name: str, why: str) -> None:
    model = _if_model(name)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    with pytest.raises(
        InvalidModelError, match=f"node 'inner' of subgraph if:then_branch reads '{name}', which {why}"
    ):
        insert_stop_gradient(model, "a")


def test_subgraph_output_that_nothing_defines_is_refused() -> None:
    model = _if_model("a")
    next(a for a in model.graph.node[1].attribute if a.name == "then_branch").g.output[0].name = "ghost"
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    with pytest.raises(
        InvalidModelError, match=r"graph output 'ghost' is not .* \(subgraph if:then_branch\)"
    ):
        list_stop_gradients(model)


def _nested(depth: int) -> onnx.ModelProto:
    """``depth`` If nodes, each in the previous one's then-branch; the leaf reads ``c``."""
    model = make_model([], [helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [])
    graph = model.graph
    for level in range(depth):
        graph.node.add(op_type="If", input=["c"], output=[f"y{level}"], name=f"if{level}")
        graph.output.add(name=f"y{level}")
        sub = graph.node[0].attribute.add(name="then_branch", type=AttributeProto.GRAPH).g
        other = graph.node[0].attribute.add(name="else_branch", type=AttributeProto.GRAPH).g
        other.node.add(op_type="Identity", input=["c"], output=[f"e{level}"])
        other.output.add(name=f"e{level}")
        graph = sub
    graph.node.add(op_type="Identity", input=["c"], output=["leaf"], name="leaf")
    graph.output.add(name="leaf")
    return model


def test_nesting_up_to_the_limit_is_accepted() -> None:
    model = _nested(MAX_DEPTH)
    out, report = insert_stop_gradient(model, "leaf")
    assert [i.tensor for i in report.inserted] == ["leaf"]
    assert len(list_stop_gradients(out).stops) == 1


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3000])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_deeper_nesting_is_refused_without_recursion_error(depth: int, call: str) -> None:
    with pytest.raises(InvalidModelError, match=f"nested more than {MAX_DEPTH} levels deep"):
        CALLS[call](_nested(depth))


# --- names that are not UTF-8 -----------------------------------------------------------------


@pytest.mark.parametrize("old", [b"stop", b"r", b"W", b"h"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_names_that_are_not_utf8_are_refused(old: bytes, call: str) -> None:
    """protobuf parses invalid UTF-8 in names and hands it back as bytes."""
    data = _mlp().SerializeToString()
    prefix = bytes([len(old)])  # a string field is its length, then its bytes
    broken = data.replace(prefix + old, prefix + b"\xff" * len(old))
    assert broken != data
    model = onnx.ModelProto.FromString(broken)
    with pytest.raises(InvalidModelError, match="model is corrupt: a tensor/node name is not valid UTF-8"):
        CALLS[call](model)


# --- the CLI: one line on failure, warnings after success --------------------------------------


def test_cli_refusal_is_one_line_and_writes_nothing(tmp_path) -> None:
    from onnx_stopgrad.cli import main

    model = _mlp()
    model.graph.node[0].input[0] = "y"
    onnx.save(model, tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["insert", str(tmp_path / "m.onnx"), "--at", "h"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: invalid model: node 'mm'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("fail,verbose", [(False, False), (True, False), (False, True), (True, True)])
def test_cli_prints_library_warnings_only_after_success_or_with_verbose(
    tmp_path, monkeypatch, fail, verbose
) -> None:
    from onnx_stopgrad.cli import main, rewrite

    onnx.save(_mlp(), tmp_path / "m.onnx")

    def listing(model):
        logging.getLogger("onnx_stopgrad.passes.listing").warning("something odd")
        if fail:
            raise InvalidModelError("broken on purpose")
        return list_stop_gradients(model)

    monkeypatch.setattr(rewrite, "list_stop_gradients", listing)
    args = (["-v"] if verbose else []) + ["list", str(tmp_path / "m.onnx")]
    result = CliRunner().invoke(main, args)
    lines = result.stderr.splitlines()
    if fail:
        assert result.exit_code == 1
        assert lines == (["warning: something odd"] if verbose else []) + ["error: broken on purpose"]
    else:
        assert result.exit_code == 0 and lines == ["warning: something odd"]
    assert not logging.getLogger("onnx_stopgrad").handlers[1:], "the CLI handler was left installed"
