"""insert_stop_gradient on hand-built graphs: structure, checker, numerics."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper
from rewrite_cases import (
    assert_same_outputs,
    chain_model,
    check,
    is_toposorted,
    make_model,
    stop_nodes,
    vi,
)

from onnx_stopgrad import DOMAIN, OPSET_VERSION, insert_stop_gradient
from onnx_stopgrad.errors import TensorNotFoundError


def _inputs_of(model: onnx.ModelProto, node_name: str) -> list[str]:
    return list(next(n for n in model.graph.node if n.name == node_name).input)


def test_stops_every_internal_reader_and_keeps_the_graph_output():
    source = chain_model()
    model, report = insert_stop_gradient(source, "a")
    check(model)
    (stop,) = stop_nodes(model.graph)
    assert (stop.name, list(stop.input), list(stop.output)) == ("a/StopGradient", ["a"], ["a_stopgrad"])
    assert [n.name for n in model.graph.node][:2] == ["relu", "a/StopGradient"]  # right after producer
    assert _inputs_of(model, "mul") == ["a_stopgrad", "W"]
    assert _inputs_of(model, "add") == ["a_stopgrad", "b"]
    assert [o.name for o in model.graph.output] == ["y", "a"]  # output keeps the original tensor
    assert report.modified and report.opset_added
    assert report.inserted[0].consumers == ("mul", "add")
    assert_same_outputs(source, model)


def test_caller_model_is_not_changed():
    source = chain_model()
    before = source.SerializeToString()
    insert_stop_gradient(source, "a")
    assert source.SerializeToString() == before


def test_value_info_opset_doc_and_metadata():
    model, _ = insert_stop_gradient(chain_model(), ["a", "b"])
    infos = {v.name: v for v in model.graph.value_info}
    assert infos["a_stopgrad"].type == infos["b"].type  # dtype and shape carried over
    assert infos["b_stopgrad"].type == infos["b"].type
    assert [(o.domain, o.version) for o in model.opset_import if o.domain == DOMAIN] == [
        (DOMAIN, OPSET_VERSION)
    ]
    assert model.doc_string == "chain"
    assert {p.key: p.value for p in model.metadata_props} == {"author": "tests"}
    assert next(n for n in model.graph.node if n.name == "add").doc_string == "the sum"
    again, report = insert_stop_gradient(model, "W")
    assert [o.domain for o in again.opset_import].count(DOMAIN) == 1 and not report.opset_added


def test_only_named_consumers():
    source = chain_model()
    model, report = insert_stop_gradient(source, "a", consumers={"a": ["add"]})
    check(model)
    assert _inputs_of(model, "mul") == ["a", "W"]
    assert _inputs_of(model, "add") == ["a_stopgrad", "b"]
    assert report.inserted[0].consumers == ("add",)
    assert_same_outputs(source, model)


def test_second_consumer_reuses_the_existing_stop():
    model, _ = insert_stop_gradient(chain_model(), "a", consumers={"a": ["add"]})
    model, report = insert_stop_gradient(model, "a", consumers={"a": ["mul", "add"]})
    assert len(stop_nodes(model.graph)) == 1
    assert report.inserted[0].reused and report.inserted[0].consumers == ("mul",)
    assert _inputs_of(model, "mul") == ["a_stopgrad", "W"]


def test_idempotent():
    once, _ = insert_stop_gradient(chain_model(), ["a", "W"])
    twice, report = insert_stop_gradient(once, ["a", "W"])
    assert not report.modified
    assert {s.reason for s in report.skipped} == {"already stopped"}
    assert twice.SerializeToString() == once.SerializeToString()
    assert "nothing to do" in report.summary()
    _, report = insert_stop_gradient(once, "a_stopgrad")
    assert not report.modified and "StopGradient already" in report.skipped[0].reason
    _, report = insert_stop_gradient(once, "a", consumers={"a": ["add"]})
    assert not report.modified


def test_initializer_and_graph_input_targets_go_first():
    source = chain_model()
    model, _report = insert_stop_gradient(source, ["W", "x"])
    check(model)
    assert [n.name for n in model.graph.node][:2] == ["W/StopGradient", "x/StopGradient"]
    assert _inputs_of(model, "mul") == ["a", "W_stopgrad"]
    assert _inputs_of(model, "relu") == ["x_stopgrad"]
    assert is_toposorted(model.graph)
    infos = {v.name: v for v in model.graph.value_info}
    assert infos["W_stopgrad"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in infos["W_stopgrad"].type.tensor_type.shape.dim] == [2, 3]
    assert_same_outputs(source, model)


def test_several_targets_keep_the_graph_sorted():
    source = chain_model()
    model, report = insert_stop_gradient(source, ["b", "a", "x", "W"])
    check(model)
    assert len(report.inserted) == 4 and is_toposorted(model.graph)
    assert_same_outputs(source, model)


def test_outputs_of_one_node_are_inserted_in_request_order():
    nodes = [
        helper.make_node("Split", ["x"], ["p", "q"], name="split", axis=1, num_outputs=2),
        helper.make_node("Add", ["q", "p"], ["y"], name="add"),
    ]
    source = make_model(nodes, [vi("x", (2, 4))], [vi("y", (2, 2))])
    source.opset_import[0].version = 18
    model, _ = insert_stop_gradient(source, ["q", "p"])
    check(model)
    assert [n.name for n in model.graph.node] == ["split", "q/StopGradient", "p/StopGradient", "add"]
    assert_same_outputs(source, model)


def test_new_names_never_collide():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a/StopGradient"),
        helper.make_node("Neg", ["a"], ["a_stopgrad"], name="neg"),
        helper.make_node("Abs", ["x"], ["a_stopgrad_1"], name="dangling"),  # read by nobody
        helper.make_node("Add", ["a", "a_stopgrad"], ["y"], name="add"),
    ]
    source = make_model(nodes, [vi("x")], [vi("y")])
    model, _report = insert_stop_gradient(source, "a")
    check(model)
    (stop,) = stop_nodes(model.graph)
    assert stop.output[0] == "a_stopgrad_2" and stop.name == "a/StopGradient_1"
    assert_same_outputs(source, model)


def test_names_collide_with_every_cheap_candidate():
    taken = ["a_stopgrad"] + [f"a_stopgrad_{i}" for i in range(1, 6)]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu")]
    nodes += [helper.make_node("Neg", ["x"], [name], name=f"n{i}") for i, name in enumerate(taken)]
    nodes.append(helper.make_node("Add", ["a", "x"], ["y"], name="add"))
    model, _ = insert_stop_gradient(make_model(nodes, [vi("x")], [vi("y")]), "a")
    assert stop_nodes(model.graph)[0].output[0] == "a_stopgrad_6"


def test_unknown_tensor_suggests_close_names():
    with pytest.raises(
        TensorNotFoundError, match=r"no tensor 'ab' in the model; did you mean ('a', 'b'|'b', 'a')\?"
    ):
        insert_stop_gradient(chain_model(), "ab")
    with pytest.raises(TensorNotFoundError, match="'mul' is a node, not a tensor; its outputs are 'b'"):
        insert_stop_gradient(chain_model(), "mul")


def test_unknown_or_wrong_consumer():
    with pytest.raises(TensorNotFoundError, match=r"no node 'ad' .*'add'"):
        insert_stop_gradient(chain_model(), "a", consumers={"a": ["ad"]})
    with pytest.raises(
        TensorNotFoundError, match="node 'relu' does not read tensor 'a'; its readers are: add, mul"
    ):
        insert_stop_gradient(chain_model(), "a", consumers={"a": ["relu"]})


def test_tensor_nobody_reads_is_reported():
    model, report = insert_stop_gradient(chain_model(), "y")
    assert not report.modified and "nothing reads it" in report.skipped[0].reason
    assert not stop_nodes(model.graph)


def test_path_and_graphsurgeon_inputs(tmp_path):
    gs = pytest.importorskip("onnx_graphsurgeon")
    source = chain_model()
    path = tmp_path / "m.onnx"
    onnx.save(source, path)
    from_path, _ = insert_stop_gradient(path, "a")
    assert isinstance(from_path, onnx.ModelProto) and len(stop_nodes(from_path.graph)) == 1
    assert path.read_bytes() == source.SerializeToString()
    graph = gs.import_onnx(source)
    result, report = insert_stop_gradient(graph, "a")
    assert isinstance(result, gs.Graph) and report.modified
    exported = gs.export_onnx(result)
    exported.ir_version = 10
    check(exported)
    assert_same_outputs(source, exported)


def test_report_serialises():
    _, report = insert_stop_gradient(chain_model(), ["a", "y"])
    data = report.to_dict()
    assert data["modified"] and data["inserted"][0]["output"] == "a_stopgrad"
    assert data["skipped"][0]["tensor"] == "y"
    with pytest.raises(AttributeError):
        report.opset_added = False  # frozen


def test_an_error_changes_nothing():
    from onnx_stopgrad.passes import insert_in_place

    model = chain_model()
    before = model.SerializeToString()
    with pytest.raises(TensorNotFoundError):
        insert_in_place(model, ["a", "b"], consumers={"b": ["relu"]})  # b is read by add only
    with pytest.raises(TensorNotFoundError):
        insert_in_place(model, ["a", "nope"])
    assert model.SerializeToString() == before
