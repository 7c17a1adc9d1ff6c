"""Gradient-scale and straight-through constructs: structure, exact forward, one unit, refusals.

Gradients are checked against PyTorch in tests/training/test_gradient_family.py; here the
graphs are small hand-built ones, run in onnxruntime with the op library.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad import DOMAIN, session_options
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import ConstructError, InvalidModelError, TensorNotFoundError
from onnx_stopgrad.passes import (
    insert_stop_gradient,
    list_stop_gradients,
    remove_stop_gradient,
    scale_gradient,
    straight_through,
)

ort = pytest.importorskip("onnxruntime")


def _model() -> onnx.ModelProto:
    """x -> MatMul W -> h -> Relu -> r -> Div s -> Round -> Mul s -> Clip -> q; y = q + h."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4), "W")
    step = numpy_helper.from_array(np.array(0.25, np.float32), "step")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Div", ["r", "step"], ["d"], name="fq/Div"),
        helper.make_node("Round", ["d"], ["rd"], name="fq/Round"),
        helper.make_node("Mul", ["rd", "step"], ["m"], name="fq/Mul"),
        helper.make_node(
            "Constant", [], ["lo"], name="fq/lo", value=numpy_helper.from_array(np.array(-2, np.float32))
        ),
        helper.make_node(
            "Constant", [], ["hi"], name="fq/hi", value=numpy_helper.from_array(np.array(2, np.float32))
        ),
        helper.make_node("Clip", ["m", "lo", "hi"], ["q"], name="fq/Clip"),
        helper.make_node("Sign", ["h"], ["sg"], name="sign"),
        helper.make_node("Add", ["q", "h"], ["a"], name="add"),
        helper.make_node("Add", ["a", "sg"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w, step],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), session_options())
    return session.run(None, {"x": x})[0]


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32)


def _x(scale: float = 3.0) -> np.ndarray:
    x = (np.random.default_rng(0).standard_normal((2, 4)) * scale).astype(np.float32)
    x[0, 0] = -0.0
    return x


def test_scale_structure_and_exact_forward():
    model = _model()
    scaled, report = scale_gradient(model, "h", -0.3, ["add"])
    info = report.construct
    assert info is not None and info.kind == "gradient_scale" and info.factor == -0.3
    assert info.name == "h/GradScale" and info.consumers == ("add",)
    assert all(name.startswith("h/GradScale/") for name in info.nodes)
    ops = [n.op_type for n in scaled.graph.node if n.name.startswith("h/GradScale/")]
    assert ops == ["StopGradient", "Sub", "Constant", "Mul", "Sub"]
    assert any(opset.domain == DOMAIN for opset in scaled.opset_import) and report.opset_added
    onnx.checker.check_model(scaled, full_check=True)
    readers = {n.name: list(n.input) for n in scaled.graph.node}
    assert readers["sign"] == ["h"] and info.output in readers["add"]  # only the named edge
    for scale in (1e-30, 1.0, 1e30):
        assert np.array_equal(_bits(_run(scaled, _x(scale))), _bits(_run(model, _x(scale))))


def test_large_factor_does_not_overflow():
    """|f| * (stop(x) - x) is |f| * +0: no s*x is formed, so no inf - inf."""
    model = _model()
    scaled, _ = scale_gradient(model, "h", 1e30)
    x = _x(1e30)
    assert np.array_equal(_bits(_run(scaled, x)), _bits(_run(model, x)))


def test_non_finite_input_gives_nan():
    """Documented: for an infinite input, stop(x) - x is NaN, and so is the output."""
    model = _model()
    scaled, _ = scale_gradient(model, "h", 2.0, ["add"])
    x = _x()
    x[1, :] = [np.inf, 0, 0, 0]  # h[1] = -inf: finite elsewhere
    plain, result = _run(model, x), _run(scaled, x)
    assert np.isinf(plain[1]).any() and np.isnan(result[1]).all()
    assert np.array_equal(_bits(result[0]), _bits(plain[0]))


def test_straight_through_chain_structure_and_exact_forward():
    model = _model()
    wrapped, report = straight_through(model, "fq/Div", "fq/Clip")
    info = report.construct
    assert info is not None and (info.input, info.quantized) == ("r", "q")
    assert info.consumers == ("add",) and report.nodes == ("fq/Div", "fq/Clip")
    onnx.checker.check_model(wrapped, full_check=True)
    assert np.array_equal(_bits(_run(wrapped, _x())), _bits(_run(model, _x())))


def test_remove_restores_the_original_exactly():
    model = _model()
    step1, _ = scale_gradient(model, "h", -1.0, ["add"])
    step2, _ = straight_through(step1, "fq/Div", "fq/Clip")
    step3, _ = straight_through(step2, "sign")
    listed = list_stop_gradients(step3)
    assert listed.stops == () and len(listed.constructs) == 3
    restored, report = remove_stop_gradient(step3)
    assert report.opset_removed and len(report.removed) == 3
    assert restored.SerializeToString() == model.SerializeToString()
    # one unit at a time, by its name, its output or one of its nodes
    partial, _ = remove_stop_gradient(step3, ["h/GradScale", "h/StraightThrough/Output"])
    assert partial.SerializeToString() == straight_through(model, "fq/Div", "fq/Clip")[0].SerializeToString()


def test_plain_stops_and_constructs_side_by_side():
    model, _ = insert_stop_gradient(_model(), "r")
    model, _ = scale_gradient(model, "h", 0.5)
    report = list_stop_gradients(model)
    assert [s.node for s in report.stops] == ["r/StopGradient"]
    assert [c.name for c in report.constructs] == ["h/GradScale"]
    assert "gradient of h scaled by 0.5" in report.summary()
    assert json.loads(json.dumps(report.to_dict()))["constructs"][0]["kind"] == "gradient_scale"
    only_stop, _ = remove_stop_gradient(model, "r/StopGradient")
    assert [c.name for c in list_stop_gradients(only_stop).constructs] == ["h/GradScale"]


def test_factor_zero_is_a_stop_and_one_is_nothing():
    stopped, report = scale_gradient(_model(), "h", 0.0, ["add"])
    assert report.stop is not None and report.construct is None
    assert [s.node for s in list_stop_gradients(stopped).stops] == ["h/StopGradient"]
    same, report = scale_gradient(_model(), "h", 1.0)
    assert not report.modified and same.SerializeToString() == _model().SerializeToString()


def test_two_scales_on_one_tensor_get_their_own_names():
    model, _ = scale_gradient(_model(), "h", 0.5, ["add"])
    model, report = scale_gradient(model, "h", -2.0, ["sign"])
    assert report.construct is not None and report.construct.name == "h/GradScale_1"
    assert [c.factor for c in list_stop_gradients(model).constructs] == [-2.0, 0.5]


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda m: straight_through(m, "mm"), ConstructError, "not elementwise"),
        (lambda m: straight_through(m, "add"), ConstructError, "name the one that gets the gradient"),
        (lambda m: straight_through(m, "add", input="q"), ConstructError, "also reads 'h'"),
        (lambda m: straight_through(m, "fq/Clip", "fq/Div"), ConstructError, "does not read the output"),
        (lambda m: straight_through(m, "fq/Rnd"), TensorNotFoundError, "did you mean 'fq/Round'"),
        (lambda m: straight_through(m, "fq/Div", input="zz"), TensorNotFoundError, "does not read 'zz'"),
        (lambda m: scale_gradient(m, "hh", 2.0), TensorNotFoundError, "did you mean 'h'"),
        (lambda m: scale_gradient(m, "h", float("nan")), ConstructError, "not a finite number"),
        (lambda m: scale_gradient(m, "h", 2.0, ["mm"]), TensorNotFoundError, "does not read tensor 'h'"),
        (lambda m: scale_gradient(m, "mm", 2.0), TensorNotFoundError, "is a node, not a tensor"),
    ],
)
def test_refusals_are_one_line_and_change_nothing(call, error, text):
    model = _model()
    before = model.SerializeToString()
    with pytest.raises(error) as caught:
        call(model)
    assert text in str(caught.value) and "\n" not in str(caught.value)
    assert model.SerializeToString() == before


def test_shape_and_type_changing_nodes_are_refused():
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "row"], ["b"], name="broadcast"),
            helper.make_node("Cast", ["x"], ["i"], name="cast", to=TensorProto.INT64),
            helper.make_node("Cast", ["i"], ["f"], name="back", to=TensorProto.FLOAT),
            helper.make_node("Add", ["b", "f"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "row")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConstructError, match=r"changes the shape \[2, 1\] -> \[2, 4\]"):
        straight_through(model, "broadcast")
    with pytest.raises(ConstructError, match="turns float into int64"):
        straight_through(model, "cast")
    _, report = straight_through(model, "cast", "back")  # float -> int -> float: same type and shape
    assert report.modified
    with pytest.raises(InvalidModelError, match="int64: only floating-point"):
        scale_gradient(model, "i", 2.0)


def test_cli_scale_and_straight_through(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(_model(), source)
    before = source.read_bytes()
    runner = CliRunner()
    out = tmp_path / "s.onnx"
    result = runner.invoke(
        main, ["scale", str(source), "--at", "h", "--factor", "-0.3", "--consumer", "add", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "gradient of h scaled by -0.3" in result.output
    result = runner.invoke(
        main, ["straight-through", str(out), "--node", "fq/Div", "--node", "fq/Clip", "--in-place", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["construct"]["quantized"] == "q"
    listed = runner.invoke(main, ["list", str(out)])
    assert "h/GradScale" in listed.output and "r/StraightThrough" in listed.output
    restored = tmp_path / "r.onnx"
    result = runner.invoke(main, ["remove", str(out), "-o", str(restored)])
    assert (
        result.exit_code == 0 and onnx.load(str(restored)).SerializeToString() == _model().SerializeToString()
    )
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ["scale", "M", "--at", "h", "--factor", "inf"],
        ["straight-through", "M", "--node", "mm"],
        ["straight-through", "M", "--node", "a", "--node", "b", "--node", "c"],
    ],
)
def test_cli_errors_are_one_line(tmp_path, args):
    source = tmp_path / "m.onnx"
    onnx.save(_model(), source)
    result = CliRunner().invoke(main, [str(source) if a == "M" else a for a in args])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) <= 3 and "Traceback" not in result.output
    assert not (tmp_path / "m.stopgrad.onnx").exists()


def test_analyze_and_show_see_each_construct_as_one_unit(tmp_path):
    from onnx_stopgrad.analysis import analyze
    from onnx_stopgrad.visual import draw

    model, _ = scale_gradient(_model(), "h", -0.3, ["add"])
    model, _ = straight_through(model, "fq/Div", "fq/Clip")
    report = analyze(model, use_onnxruntime=False)
    assert report.stops == []
    assert [(c.kind, c.input) for c in report.constructs] == [
        ("gradient_scale", "h"),
        ("straight_through", "r"),
    ]
    text = report.format_text()
    assert "gradient of h scaled by -0.3" in text and "straight-through, forward q" in text
    assert json.loads(report.to_json())["constructs"][1]["quantized"] == "q"
    assert "W" not in [p.name for p in report.frozen]  # a construct passes the gradient on
    dot = draw(model, tmp_path / "g.dot")
    source = (tmp_path / "g.dot").read_text()
    assert source.count('shape="hexagon"') == 2 + 2  # two constructs, two legend entries
    assert "GradScale/Zero" not in source and dot.boxes < dot.nodes


def test_insert_on_a_scaled_tensor_keeps_the_construct_whole():
    """The construct's own StopGradient is not reused as a stop of h; it is rewired with the rest."""
    scaled, _ = scale_gradient(_model(), "h", -0.3, ["add"])
    both, report = insert_stop_gradient(scaled, "h")
    assert not report.inserted[0].reused
    listed = list_stop_gradients(both)
    assert [c.input for c in listed.constructs] == ["h_stopgrad"]
    assert [s.node for s in listed.stops] == ["h/StopGradient"]
    restored, _ = remove_stop_gradient(both)
    assert restored.SerializeToString() == _model().SerializeToString()


def _identity_model(elem_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """y = Neg(Identity(x)): the construct sits between, on any value x can hold."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["h"], name="id"),
            helper.make_node("Neg", ["h"], ["y"], name="neg"),
        ],
        "g",
        [helper.make_tensor_value_info("x", elem_type, [None])],
        [helper.make_tensor_value_info("y", elem_type, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("factor", [-1e30, -0.3, -1.0, 1e-30, 0.1, 7.0, 3e38])
def test_every_finite_float32_bit_pattern_passes_unchanged(factor):
    """Random bit patterns cover subnormals, -0, the largest floats: forward is x, bit for bit."""
    bits = np.random.default_rng(0).integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x[np.isfinite(x)], np.array([0.0, -0.0, 3.4028235e38, -1e-45], np.float32)])
    scaled, _ = scale_gradient(_identity_model(), "h", factor)
    session = ort.InferenceSession(scaled.SerializeToString(), session_options())
    assert np.array_equal(session.run(None, {"x": x})[0].view(np.uint32), (-x).view(np.uint32))


def test_straight_through_passes_q_unchanged_for_every_finite_bit_pattern():
    bits = np.random.default_rng(1).integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x[np.isfinite(x)], np.array([0.0, -0.0, -0.4, 2.5], np.float32)])
    model = _identity_model()
    model.graph.node.insert(1, helper.make_node("Round", ["h"], ["q"], name="round"))
    model.graph.node[2].input[0] = "q"  # y = Neg(Round(x))
    wrapped, report = straight_through(model, "round")
    assert report.construct is not None and report.construct.consumers == ("neg",)
    session = ort.InferenceSession(wrapped.SerializeToString(), session_options())
    assert np.array_equal(session.run(None, {"x": x})[0].view(np.uint32), (-np.round(x)).view(np.uint32))


def test_graphsurgeon_graph_in_graphsurgeon_graph_out():
    gs = pytest.importorskip("onnx_graphsurgeon")
    graph, report = scale_gradient(gs.import_onnx(_model()), "h", -1.0, ["add"])
    assert isinstance(graph, gs.Graph) and report.modified
    assert [c.name for c in list_stop_gradients(graph).constructs] == ["h/GradScale"]


def test_readers_inside_subgraphs_are_refused():
    model = _model()
    branch = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["b"], name="inner")],
        "branch",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 4])],
    )
    cond = helper.make_node("Constant", [], ["c"], name="cond", value=numpy_helper.from_array(np.array(True)))
    if_node = helper.make_node("If", ["c"], ["z"], name="if", then_branch=branch, else_branch=branch)
    model.graph.node.extend([cond, if_node])
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4]))
    with pytest.raises(ConstructError, match="reads 'h' inside its subgraph"):
        scale_gradient(model, "h", 2.0)
    _, report = scale_gradient(model, "h", 2.0, ["add"])  # the other edges are fine
    assert report.construct is not None and report.construct.consumers == ("add",)
