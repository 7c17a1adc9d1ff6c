"""remove_stop_gradient, list_stop_gradients and the selection helpers."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from rewrite_cases import (
    _run_plain_ort,
    assert_same_outputs,
    chain_model,
    check,
    feeds_for,
    make_model,
    stop_nodes,
    vi,
)

from onnx_stopgrad import DOMAIN, insert_stop_gradient, list_stop_gradients, remove_stop_gradient
from onnx_stopgrad.errors import InvalidOptionError, TensorNotFoundError
from onnx_stopgrad.passes import closest_names, select_tensors, tensor_names


def test_remove_all_restores_the_original_graph():
    source = chain_model()
    stopped, _ = insert_stop_gradient(source, ["a", "W", "x"])
    restored, report = remove_stop_gradient(stopped)
    assert report.modified and report.opset_removed and len(report.removed) == 3
    assert restored.graph == source.graph
    assert all(o.domain != DOMAIN for o in restored.opset_import)
    feeds = feeds_for(source)
    for expected, got in zip(_run_plain_ort(source, feeds), _run_plain_ort(restored, feeds), strict=True):
        np.testing.assert_array_equal(got, expected)  # runs without the op library


def test_remove_one_by_node_input_or_output_name():
    stopped, _ = insert_stop_gradient(chain_model(), ["a", "b"])
    for name in ("a/StopGradient", "a", "a_stopgrad"):
        model, report = remove_stop_gradient(stopped, name)
        assert [r.node for r in report.removed] == ["a/StopGradient"]
        assert [n.name for n in stop_nodes(model.graph)] == ["b/StopGradient"]
        assert not report.opset_removed and any(o.domain == DOMAIN for o in model.opset_import)
        assert all(v.name != "a_stopgrad" for v in model.graph.value_info)
        check(model)


def test_remove_to_identity_keeps_names():
    source = chain_model()
    stopped, _ = insert_stop_gradient(source, "a")
    model, report = remove_stop_gradient(stopped, to_identity=True)
    (node,) = [n for n in model.graph.node if n.name == "a/StopGradient"]
    assert (node.op_type, node.domain, list(node.output)) == ("Identity", "", ["a_stopgrad"])
    assert report.removed[0].as_identity and report.opset_removed
    check(model)
    assert_same_outputs(source, model)


def test_stop_feeding_a_graph_output_becomes_identity():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("StopGradient", ["a"], ["y"], name="stop", domain=DOMAIN),
    ]
    model = make_model(nodes, [vi("x")], [vi("y")])
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    out, report = remove_stop_gradient(model)
    assert report.removed[0].as_identity and "graph output" in report.removed[0].reason
    assert [o.name for o in out.graph.output] == ["y"]
    check(out)


def test_remove_unknown_name():
    stopped, _ = insert_stop_gradient(chain_model(), "a")
    with pytest.raises(TensorNotFoundError, match="did you mean 'a/StopGradient'"):
        remove_stop_gradient(stopped, "a/StopGradien")
    with pytest.raises(TensorNotFoundError, match="the model has none"):
        remove_stop_gradient(chain_model(), "a")
    _, report = remove_stop_gradient(chain_model())
    assert not report.modified and "unchanged" in report.summary()


def test_list_reports_stops_and_frozen_parameters():
    weight = numpy_helper.from_array(np.ones((2, 3), np.float32), "W1")
    weight2 = numpy_helper.from_array(np.ones((2, 3), np.float32), "W2")
    nodes = [
        helper.make_node("Mul", ["x", "W1"], ["h"], name="backbone"),
        helper.make_node("Mul", ["h", "W2"], ["y"], name="head"),
    ]
    model = make_model(nodes, [vi("x")], [vi("y")], [weight, weight2])
    stopped, _ = insert_stop_gradient(model, "h")
    report = list_stop_gradients(stopped)
    assert [(s.node, s.input, s.output, s.consumers, s.graph) for s in report.stops] == [
        ("h/StopGradient", "h", "h_stopgrad", ("head",), "")
    ]
    assert report.frozen_parameters == ("W1",)
    assert "W1" in report.summary() and report.to_dict()["frozen_parameters"] == ["W1"]
    assert list_stop_gradients(model).summary() == "no StopGradient nodes"
    # Stopping one of two reads leaves W1 partly blocked, still trained.
    partial, _ = insert_stop_gradient(
        make_model(
            [*nodes, helper.make_node("Add", ["h", "y"], ["z"], name="skip")],
            [vi("x")],
            [vi("z")],
            [weight, weight2],
        ),
        "h",
        consumers={"h": ["head"]},
    )
    listed = list_stop_gradients(partial)
    assert listed.frozen_parameters == () and listed.partially_blocked_parameters == ("W1",)


def test_selection_helpers():
    model = chain_model()
    assert tensor_names(model) == ["x", "W", "a", "b", "y"]
    assert select_tensors(model, ["[ab]"]) == ["a", "b"]
    assert select_tensors(model, [], ["^W$", "a"]) == ["W", "a"]
    with pytest.raises(TensorNotFoundError, match="matches no tensor"):
        select_tensors(model, ["conv*"])
    with pytest.raises(InvalidOptionError, match="not a valid regular expression"):
        select_tensors(model, [], ["("])
    stopped, _ = insert_stop_gradient(model, "a")
    assert "a_stopgrad" not in select_tensors(stopped, ["*"])  # stops are never re-selected
    assert (
        closest_names("/layer1/Relu_out", ["/layer2/Conv", "/layer1/Relu_output_0"])[0]
        == "/layer1/Relu_output_0"
    )
