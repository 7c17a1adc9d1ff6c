"""StopGradient inside real graphs: graph outputs, chains, shared inputs, strings."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from op_helpers import make_model, stop_gradient

F = TensorProto.FLOAT


def _info(name: str, elem_type: int = F, shape=None):
    return helper.make_tensor_value_info(name, elem_type, shape)


def test_stopped_tensor_is_a_graph_output(session_factory):
    """y is both consumed and a graph output: ORT gives it its own buffer, the kernel copies."""
    nodes = [
        helper.make_node("Neg", ["x"], ["a"]),
        stop_gradient("a", "y"),
        helper.make_node("Mul", ["y", "y"], ["z"]),
    ]
    model = make_model(
        nodes, [_info("x", shape=[4, 8])], [_info("y", shape=[4, 8]), _info("z", shape=[4, 8])]
    )
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    y, z = session_factory(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, -x)
    np.testing.assert_array_equal(z, x * x)


def test_graph_input_straight_to_graph_output(session_factory):
    model = make_model([stop_gradient("x", "y")], [_info("x", shape=[3])], [_info("y", shape=[3])])
    x = np.array([1.0, np.nan, -0.0], dtype=np.float32)
    (y,) = session_factory(model).run(None, {"x": x})
    assert y.tobytes() == x.tobytes()
    assert y.ctypes.data != x.ctypes.data


@pytest.mark.parametrize("length", [2, 5, 12])
def test_chain_of_stops_between_real_ops(session_factory, length):
    """x -> Relu -> stop x length (each stop also feeds an Add) -> sum: matches numpy."""
    nodes = [helper.make_node("Relu", ["x"], ["h0"])]
    for i in range(length):
        nodes.append(stop_gradient(f"h{i}", f"s{i}"))
        nodes.append(helper.make_node("Add", [f"s{i}", "x"], [f"h{i + 1}"]))
    model = make_model(nodes, [_info("x", shape=[16])], [_info(f"h{length}", shape=[16])])
    x = np.linspace(-2, 2, 16, dtype=np.float32)
    (y,) = session_factory(model).run(None, {"x": x})
    expected = np.maximum(x, 0)
    for _ in range(length):
        expected = expected + x
    np.testing.assert_array_equal(y, expected)


def test_aliased_input_still_read_by_others(session_factory):
    """The stop's input is also read after it (in-place ops downstream must not clobber it)."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["a"]),
        stop_gradient("a", "s"),
        helper.make_node("Neg", ["s"], ["n"]),  # may run in place on s's buffer
        helper.make_node("Add", ["a", "n"], ["zero"]),
        helper.make_node("Sub", ["a", "n"], ["twice"]),
    ]
    model = make_model(
        nodes, [_info("x", shape=[64])], [_info("zero", shape=[64]), _info("twice", shape=[64])]
    )
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    zero, twice = session_factory(model).run(None, {"x": x})
    a = x * x
    np.testing.assert_array_equal(zero, a + (-a))
    np.testing.assert_array_equal(twice, a - (-a))


def test_string_alias_and_copy_paths(session_factory):
    """Strings through an aliased stop, a copying stop and a stop whose input is reused."""
    S = TensorProto.STRING
    nodes = [
        stop_gradient("x", "a"),  # internal: aliased
        stop_gradient("a", "b"),  # graph output: copied element by element
        helper.make_node("Identity", ["a"], ["c"]),
        helper.make_node("Concat", ["a", "x"], ["d"], axis=0),
    ]
    model = make_model(
        nodes, [_info("x", S, [3])], [_info("b", S, [3]), _info("c", S, [3]), _info("d", S, [6])]
    )
    x = np.array(["p\x00q", "", "ü\x00"], dtype=object)
    b, c, d = session_factory(model).run(None, {"x": x})
    assert b.tolist() == x.tolist()
    assert c.tolist() == x.tolist()
    assert d.tolist() == x.tolist() * 2


def test_repeated_runs_and_shapes(session_factory):
    """One session, several runs with different shapes (dynamic dims)."""
    model = make_model(
        [
            helper.make_node("Neg", ["x"], ["a"]),
            stop_gradient("a", "b"),
            helper.make_node("Neg", ["b"], ["y"]),
        ],
        [_info("x", shape=["n", "m"])],
        [_info("y", shape=["n", "m"])],
    )
    session = session_factory(model)
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 3), (0, 5), (128, 64)]:
        x = rng.standard_normal(shape).astype(np.float32)
        (y,) = session.run(None, {"x": x})
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("shape", [["batch", 3], [2, 0], [1, "n", 5]])
def test_runtime_sees_the_output_shape(ort, session_factory, shape):
    """ORT's own shape inference carries the input's shape through the stop (what its
    optimizers, e.g. MatMul+Add -> Gemm after a stop, rely on)."""
    model = make_model([stop_gradient("x", "y")], [_info("x", shape=shape)], [_info("y")])
    assert session_factory(model).get_outputs()[0].shape == shape
