"""SplitToSequence + SequenceAt (torch's dynamo export of ``tensor.split``) becomes a Split.

The rewritten graph computes the same values (onnx.reference, bit for bit), and the weight
before the split then trains with PyTorch's gradient; left alone, ORT 1.19 cannot reach it.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnx_stopgrad.training._split_fixup import split_sequences

W = np.random.default_rng(0).standard_normal((12, 12)).astype(np.float32)


def _model(split: np.ndarray | None, picks: list[int], sequence_output: bool = False, opset: int = 17):
    """x (2, 3, 12) @ W -> SplitToSequence(axis 2) -> SequenceAt(picks) -> Concat -> sum of squares."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"])]
    inputs = ["h"]
    if split is not None:
        nodes.append(helper.make_node("Constant", [], ["sizes"], value=numpy_helper.from_array(split)))
        inputs.append("sizes")
    nodes.append(helper.make_node("SplitToSequence", inputs, ["seq"], axis=2))
    for i, index in enumerate(picks):
        nodes.append(
            helper.make_node("Constant", [], [f"i{i}"], value=numpy_helper.from_array(np.int64(index)))
        )
        nodes.append(helper.make_node("SequenceAt", ["seq", f"i{i}"], [f"p{i}"]))
    nodes.append(helper.make_node("Concat", [f"p{i}" for i in range(len(picks))], ["cat"], axis=2))
    nodes.append(helper.make_node("Mul", ["cat", "cat"], ["sq"]))
    nodes.append(helper.make_node("ReduceSum", ["sq"], ["y"], keepdims=0))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])]
    if sequence_output:
        outputs.append(helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12])],
        outputs,
        [numpy_helper.from_array(W, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


X = np.random.default_rng(1).standard_normal((2, 3, 12)).astype(np.float32)


@pytest.mark.parametrize(
    ("split", "picks"),
    [
        (np.int64(4), [0, 2, -2]),  # equal chunks, a negative index
        (np.int64(5), [2, 1, 1]),  # 5, 5, 2; one chunk read twice
        (np.array([3, 9], dtype=np.int64), [1, 0]),
    ],
    ids=["scalar", "scalar-uneven-repeat", "sizes"],
)
@pytest.mark.parametrize("opset", [11, 17])  # Split-11 takes the sizes as an attribute
def test_same_values_as_the_sequence_ops(split, picks, opset):
    model = _model(split, picks, opset=opset)
    fixed = copy.deepcopy(model)
    assert split_sequences(fixed) == [
        "1 SplitToSequence node(s) -> Split (ORT 1.19 has no gradient through sequences)"
    ]
    assert [n.op_type for n in fixed.graph.node].count("Split") == 1
    assert not {"SplitToSequence", "SequenceAt"} & {n.op_type for n in fixed.graph.node}
    onnx.checker.check_model(fixed, full_check=True)
    expected = ReferenceEvaluator(model).run(None, {"x": X})[0]
    actual = ReferenceEvaluator(fixed).run(None, {"x": X})[0]
    np.testing.assert_array_equal(actual, expected)


def test_left_alone_when_it_cannot_be_rewritten():
    for model in (
        _model(np.int64(4), [0, 1], sequence_output=True),  # the sequence itself is an output
        _model(None, [0, 1]),  # no sizes: one chunk per element (needs keepdims handling)
        _model(np.array([3, 8], dtype=np.int64), [0, 1]),  # sizes do not add up to the axis
    ):
        before = copy.deepcopy(model)
        assert split_sequences(model) == []
        assert model == before


@pytest.mark.training
def test_weight_before_the_split_trains_as_in_torch(tmp_path):
    pytest.importorskip("onnxruntime.training")
    torch = pytest.importorskip("torch")
    from onnx_stopgrad.training import generate_artifacts, load

    model = _model(np.int64(4), [0, 2, 1])
    report = generate_artifacts(model, loss="mse", artifact_directory=tmp_path)
    assert report.trainable == ("W",)
    assert any("SplitToSequence" in line for line in report.adjustments)
    state, module, _ = load(tmp_path)
    module.train()
    target = np.float32(0.5)
    loss = float(np.asarray(module(X, np.array(target))))

    w = torch.tensor(W, requires_grad=True)
    a, b, c = (torch.from_numpy(X) @ w).split(4, dim=2)
    expected = ((torch.cat([a, c, b], dim=2) ** 2).sum() - target) ** 2
    expected.backward()
    assert abs(loss - expected.item()) <= 1e-5 * abs(expected.item())
    grad = state.parameters["W"].grad
    assert np.abs(grad - w.grad.numpy()).max() <= 1e-5 * np.abs(w.grad.numpy()).max()
