"""Stops inside and across If/Loop/Scan subgraphs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from rewrite_cases import (
    assert_same_outputs,
    check,
    feeds_for,
    if_model,
    is_toposorted,
    loop_model,
    make_model,
    stop_nodes,
    vi,
)

from onnx_stopgrad import insert_stop_gradient, list_stop_gradients, remove_stop_gradient


def _attr_graph(model: onnx.ModelProto, node_name: str, attr_name: str) -> onnx.GraphProto:
    node = next(n for n in model.graph.node if n.name == node_name)
    return next(a.g for a in node.attribute if a.name == attr_name)


def test_outer_tensor_read_inside_branches_is_rewired():
    source = if_model()
    model, report = insert_stop_gradient(source, "h")
    check(model)
    assert is_toposorted(model.graph)
    (stop,) = stop_nodes(model.graph)
    assert stop.output[0] == "h_stopgrad"
    then_graph, else_graph = _attr_graph(model, "if", "then_branch"), _attr_graph(model, "if", "else_branch")
    assert list(then_graph.node[0].input) == ["h_stopgrad", "h_stopgrad"]
    assert list(else_graph.node[0].input) == ["h_stopgrad"]
    assert set(report.inserted[0].consumers) == {"sum", "then_mul", "else_id", "add"}
    for sign in (1.0, -1.0):  # take both branches
        feeds = {"x": sign * np.abs(feeds_for(source)["x"])}
        assert_same_outputs(source, model, feeds)


def test_consumer_can_be_the_if_node_or_a_node_inside():
    inner, _ = insert_stop_gradient(if_model(), "h", consumers={"h": ["then_mul"]})
    assert list(_attr_graph(inner, "if", "then_branch").node[0].input) == ["h_stopgrad", "h_stopgrad"]
    assert list(_attr_graph(inner, "if", "else_branch").node[0].input) == ["h"]
    whole, _ = insert_stop_gradient(if_model(), "h", consumers={"h": ["if"]})
    assert list(_attr_graph(whole, "if", "else_branch").node[0].input) == ["h_stopgrad"]
    assert list(next(n for n in whole.graph.node if n.name == "add").input) == ["branch", "h"]
    check(whole)


def test_tensor_inside_a_loop_body():
    source = loop_model()
    model, report = insert_stop_gradient(source, "w")
    check(model)
    body = _attr_graph(model, "loop", "body")
    assert [n.name for n in body.node] == ["body_cond", "body_relu", "w/StopGradient", "body_mul", "body_add"]
    assert list(body.node[3].input) == ["acc_in", "w_stopgrad"]
    assert report.inserted[0].graph == "loop:body"
    assert_same_outputs(source, model)
    listed = list_stop_gradients(model)
    assert [(s.node, s.graph, s.consumers) for s in listed.stops] == [
        ("w/StopGradient", "loop:body", ("body_mul",))
    ]
    restored, removal = remove_stop_gradient(model)
    assert removal.modified and restored.graph == source.graph


def test_subgraph_output_reads_the_stopped_copy():
    source = loop_model()
    model, report = insert_stop_gradient(source, "acc_out")
    check(model)
    body = _attr_graph(model, "loop", "body")
    assert [o.name for o in body.output] == ["cond_out", "acc_out_stopgrad"]  # outputs are positional
    assert report.inserted[0].consumers == ("loop:body output 1",)
    assert [o.name for o in model.graph.output] == ["y"]
    assert_same_outputs(source, model)


def test_body_input_and_outer_tensor_in_a_loop():
    source = loop_model()
    model, report = insert_stop_gradient(source, ["acc_in", "x"])
    check(model)
    body = _attr_graph(model, "loop", "body")
    assert body.node[0].name == "acc_in/StopGradient"
    by_name = {n.name: list(n.input) for n in body.node}
    assert by_name["body_add"] == ["p", "x_stopgrad"]  # outer x seen through the stop
    assert by_name["body_relu"] == ["acc_in_stopgrad"]
    assert {i.graph for i in report.inserted} == {"loop:body", ""}
    assert_same_outputs(source, model)


def test_scan_body():
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "e"], ["sum"], name="scan_add"),
            helper.make_node("Identity", ["sum"], ["s_out"], name="scan_state"),
            helper.make_node("Mul", ["sum", "k"], ["scan_y"], name="scan_mul"),
        ],
        "scan_body",
        [vi("s_in", [3]), vi("e", [3])],
        [vi("s_out", [3]), vi("scan_y", [3])],
    )
    nodes = [
        helper.make_node("Neg", ["x"], ["k"], name="neg"),
        helper.make_node("Scan", ["init", "xs"], ["final", "ys"], name="scan", body=body, num_scan_inputs=1),
        helper.make_node("Add", ["final", "k"], ["y"], name="add"),
    ]
    source = make_model(
        nodes, [vi("x", [3]), vi("init", [3]), vi("xs", [4, 3])], [vi("y", [3]), vi("ys", [4, 3])]
    )
    model, _report = insert_stop_gradient(source, ["k", "sum"])
    check(model)
    scan_body = _attr_graph(model, "scan", "body")
    by_name = {n.name: list(n.input) for n in scan_body.node}
    assert by_name["scan_mul"] == ["sum_stopgrad", "k_stopgrad"]
    assert by_name["scan_state"] == ["sum_stopgrad"]
    assert_same_outputs(source, model)


def test_shadowed_name_in_a_subgraph_is_its_own_tensor():
    # The branch defines its own "h" (allowed by ORT/onnx only in odd models): stopping the
    # outer h must not rewire the inner one; both get their own stop.
    branch = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["g"], name="inner_neg"),
            helper.make_node("Abs", ["g"], ["o"], name="inner_abs"),
        ],
        "b",
        [],
        [vi("o")],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["g0"], name="relu"),
        helper.make_node("If", ["c"], ["r"], name="if", then_branch=branch, else_branch=branch),
        helper.make_node("Add", ["r", "g0"], ["y"], name="add"),
    ]
    source = make_model(nodes, [vi("x"), vi("c", [], TensorProto.BOOL)], [vi("y")])
    model, report = insert_stop_gradient(source, "g")
    assert {i.graph for i in report.inserted} == {"if:then_branch", "if:else_branch"}
    check(model)
    feeds = {"x": feeds_for(source)["x"], "c": np.array(True)}
    assert_same_outputs(source, model, feeds)
    listed = list_stop_gradients(model)
    assert sorted((s.graph, s.consumers) for s in listed.stops) == [
        ("if:else_branch", ("inner_abs",)),
        ("if:then_branch", ("inner_abs",)),
    ]
    restored, report = remove_stop_gradient(model)
    assert len(report.removed) == 2 and restored.graph == source.graph


def test_remove_rewires_reads_inside_branches_back():
    source = if_model()
    stopped, _ = insert_stop_gradient(source, "h")
    restored, report = remove_stop_gradient(stopped)
    assert set(report.removed[0].consumers) == {"sum", "then_mul", "else_id", "add"}
    assert restored.graph == source.graph
    check(restored)


def test_a_stop_inside_a_branch_is_not_stopped_again():
    source = if_model()
    inner, _ = insert_stop_gradient(source, "h", consumers={"h": ["then_mul"]})
    # Move the stop into the branch by hand: then_mul reads StopGradient(h) computed inside.
    then_graph = _attr_graph(inner, "if", "then_branch")
    stop = next(n for n in inner.graph.node if n.op_type == "StopGradient")
    then_graph.node.insert(0, stop)
    inner.graph.node.remove(stop)
    model, report = insert_stop_gradient(inner, "h")
    assert set(report.inserted[0].consumers) == {"sum", "else_id", "add"}
    assert list(_attr_graph(model, "if", "then_branch").node[0].input) == ["h"]  # the inner stop
    check(model)
    assert_same_outputs(source, model)
