"""analyze's gradient-graph counts agree with the training graphs ONNX Runtime builds."""

from __future__ import annotations

import copy

import onnx
import pytest
from analysis_graphs import frozen_backbone, shared_weight
from artifact_counts import backward_nodes

from onnx_stopgrad.analysis import analyze
from onnx_stopgrad.graph import is_stop_gradient, node_label

pytest.importorskip("onnxruntime.training", reason="needs onnxruntime-training (the .venv runtime)")
pytestmark = pytest.mark.training


def concat_branches() -> onnx.ModelProto:
    """y = Concat(stop(relu(x2 @ W1)) @ W2, relu(x @ W1) @ W2): ORT makes the Concat a
    ConcatTraining while it builds gradients (a forward node, not a gradient node)."""
    from analysis_graphs import X, _init, _model, _stop
    from onnx import TensorProto, helper

    mm = helper.make_node
    nodes = [
        mm("MatMul", ["x2", "W1"], ["g"], name="/gen/mm"), mm("Relu", ["g"], ["gr"], name="/gen/relu"),
        _stop("gr", "fake_in", "/stop"), mm("MatMul", ["fake_in", "W2"], ["fake"], name="/disc/fake"),
        mm("MatMul", ["x", "W1"], ["h"], name="/enc/mm"), mm("Relu", ["h"], ["r"], name="/enc/relu"),
        mm("MatMul", ["r", "W2"], ["real"], name="/disc/real"),
        mm("Concat", ["fake", "real"], ["y"], axis=0, name="/cat"),
    ]  # fmt: skip
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch2", 3])
    return _model(nodes, [X, x2], [y], [_init("W1"), _init("W2")])


def _sum_loss(outputs: int):
    """An onnxblock loss: the sum of every element of every model output."""
    from onnxruntime.training.onnxblock import blocks

    class SumLoss(blocks.Block):
        def __init__(self) -> None:
            super().__init__()
            self.reduce = [blocks.ReduceSum(keepdims=False) for _ in range(outputs)]
            self.add = [blocks.Add() for _ in range(outputs - 1)]

        def build(self, *names: str) -> str:
            total = self.reduce[0](names[0])
            for index, name in enumerate(names[1:]):
                total = self.add[index](total, self.reduce[index + 1](name))
            return total

    return SumLoss()


@pytest.mark.parametrize("build", [frozen_backbone, shared_weight, concat_branches])
def test_counts_match_onnx_stopgrad_artifacts(build, tmp_path) -> None:
    """The stops remove as many gradient nodes as `artifacts` measures with ORT's own API."""
    from onnx_stopgrad.training import generate_artifacts

    model = build()
    report = analyze(model)
    assert report.gradient_graph.source == "onnxruntime", report.gradient_graph.fallback_reason
    built = generate_artifacts(
        model, loss=_sum_loss(len(model.graph.output)), optimizer="sgd", artifact_directory=tmp_path / "with"
    )
    # Without stops: ORT's own function on the model with every stop removed (not made an
    # Identity, which would get a gradient node of its own).
    from onnxruntime.training import artifacts

    from onnx_stopgrad import remove_stop_gradient

    plain, _ = remove_stop_gradient(copy.deepcopy(model))
    assert not any(is_stop_gradient(n) or n.op_type == "Identity" for n in plain.graph.node)
    (tmp_path / "without").mkdir()
    params = [t.name for t in model.graph.initializer]
    artifacts.generate_artifacts(
        plain, requires_grad=params, loss=_sum_loss(len(model.graph.output)),
        optimizer=artifacts.OptimType.SGD, artifact_directory=tmp_path / "without",
    )  # fmt: skip
    assert report.gradient_graph.with_stops == backward_nodes(tmp_path / "with")
    assert report.gradient_graph.without_stops == backward_nodes(tmp_path / "without")
    assert report.gradient_graph.removed > 0
    # One definition of a gradient node: analyze and the artifacts count alike.
    assert (built.gradient_nodes, built.gradient_nodes_without_stops) == (
        report.gradient_graph.with_stops,
        report.gradient_graph.without_stops,
    )


@pytest.mark.parametrize("build", [frozen_backbone, shared_weight])
def test_static_differentiated_nodes_match_ort(build) -> None:
    """The forward nodes analyze says lose their gradient have no gradient node in ORT's graph."""
    from onnx_stopgrad.analysis._analyze import _check_targets
    from onnx_stopgrad.analysis._backward import plan_backward
    from onnx_stopgrad.analysis._ort_graph import build_ort_gradient_graph
    from onnx_stopgrad.analysis._shapes import infer_shapes
    from onnx_stopgrad.graph import analyze_gradient_flow, element_types

    model = build()
    targets = _check_targets(model.graph, None)
    flow = analyze_gradient_flow(model, targets)
    table = infer_shapes(model)
    labels = [node_label(n, i) for i, n in enumerate(model.graph.node)]
    for cut, params in ((True, flow.trainable), (False, [*flow.trainable, *flow.frozen])):
        ort = build_ort_gradient_graph(model, params, targets, table, cut_stops=cut)
        static = plan_backward(model.graph, params, targets, element_types(model), cut_stops=cut)
        expected = {labels[i] for i in static.nodes if not is_stop_gradient(model.graph.node[i])}
        ort_nodes = {name for name in ort.differentiated if name in labels}
        stop_names = {labels[i] for i, n in enumerate(model.graph.node) if is_stop_gradient(n)}
        assert ort_nodes - stop_names == expected
    report = analyze(model)
    assert {n.name for n in report.no_gradient_nodes} <= set(labels)


def test_transformer_export_counts_from_ort(tmp_path) -> None:
    """A torch-exported encoder (LayerNormalization with one output) is counted by ORT."""
    torch = pytest.importorskip("torch")
    from analysis_torch import export_encoder

    path = export_encoder(tmp_path / "enc.onnx", layers=2)
    report = analyze(
        path, at=["/encoder/layers.0/norm2/LayerNormalization_output_0"], dims={"batch": 4, "seq": 16}
    )
    g = report.gradient_graph
    assert g.source == "onnxruntime", g.fallback_reason
    assert 0 < g.with_stops < g.without_stops
    assert report.costs.backward_flops_saved > 0 and report.costs.activation_bytes_saved > 0
    assert all(p.name.startswith(("embed.", "encoder.layers.0.")) for p in report.frozen)
    assert {p.name for p in report.unaffected} >= {"head.weight", "head.bias"}
    del torch
