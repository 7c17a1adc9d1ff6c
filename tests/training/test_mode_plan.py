"""plan_modes and apply_modes on small hand-built graphs (no training build)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION
from onnx_stopgrad.errors import TrainingError
from onnx_stopgrad.training._mode_rewrite import apply_modes
from onnx_stopgrad.training._modes import plan_modes

C = 3


def _bn(name: str, x: str, y: str, training: int | None = None, outputs: int = 1) -> onnx.NodeProto:
    attrs = {} if training is None else {"training_mode": training}
    extra = [f"{name}.mean_out", f"{name}.var_out"][: outputs - 1]
    ins = [x, f"{name}.s", f"{name}.b", f"{name}.mean", f"{name}.var"]
    return helper.make_node("BatchNormalization", ins, [y, *extra], name=name, epsilon=1e-3, **attrs)


def _bn_params(name: str, rng: np.random.Generator) -> list[onnx.TensorProto]:
    values = {"s": 1 + rng.random(C), "b": rng.random(C), "mean": rng.random(C), "var": 0.5 + rng.random(C)}
    return [numpy_helper.from_array(v.astype(np.float32), f"{name}.{k}") for k, v in values.items()]


def _model(opset: int = 17, head_training: int | None = 1, side_branch: bool = False) -> onnx.ModelProto:
    """x -> Conv(w0) -> bn0 -> Dropout(false) -> stop -> Conv(w1) -> bn1 -> Dropout(true) -> y;
    with ``side_branch`` bn2 reads Conv(w1)'s output but only feeds a second output through a stop."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
        _bn("bn0", "c0", "b0"),
        helper.make_node("Dropout", ["b0", "ratio", "off"], ["d0"], name="drop0"),
        helper.make_node(OP_TYPE, ["d0"], ["s0"], name="stop", domain=DOMAIN),
        helper.make_node("Conv", ["s0", "w1"], ["c1"], name="conv1"),
        _bn("bn1", "c1", "b1", head_training, outputs=3 if head_training else 1),
        helper.make_node("Dropout", ["b1", "ratio", "on"], ["y"], name="drop1"),
    ]
    inits = [
        numpy_helper.from_array(rng.random((C, 2, 1, 1)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.random((C, C, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
        numpy_helper.from_array(np.array(False), "off"),
        numpy_helper.from_array(np.array(True), "on"),
        *_bn_params("bn0", rng),
        *_bn_params("bn1", rng),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, C, 4, 4])]
    if side_branch:
        nodes += [
            _bn("bn2", "c1", "b2"),
            helper.make_node(OP_TYPE, ["b2"], ["z"], name="stop2", domain=DOMAIN),
        ]
        inits += _bn_params("bn2", rng)
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, C, 4, 4]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 4, 4])], outputs, inits
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    )
    model.ir_version = 8  # onnxruntime-training 1.19 loads <= 10
    return model


def _summary(modes):
    return [(m.node, m.region, m.exported, m.mode) for m in modes]


def test_regions_and_exported_modes():
    modes = plan_modes(_model(side_branch=True), ["w1", "bn1.s", "bn1.b"], ["y", "z"])
    assert _summary(modes) == [
        ("bn0", "frozen", "eval", "eval"),
        ("drop0", "frozen", "eval", "eval"),
        ("bn1", "trainable", "train", "train"),
        ("drop1", "trainable", "train", "train"),
        ("bn2", "frozen", "eval", "eval"),  # reached from w1, but its output only meets a stop
    ]


@pytest.mark.parametrize(
    ("batchnorm", "dropout", "expected"),
    [
        ("eval", "off", ("eval", "eval")),
        ("train", "on", ("train", "train")),
        ("as-exported", "off", ("train", "eval")),
    ],
)
def test_overrides_apply_to_the_trainable_region_only(batchnorm, dropout, expected):
    modes = plan_modes(_model(), ["w1"], ["y"], batchnorm=batchnorm, dropout=dropout)
    assert [m.mode for m in modes if m.region == "frozen"] == ["eval", "eval"]
    assert tuple(m.mode for m in modes if m.region == "trainable") == expected


def test_opset_13_training_batchnorm_is_told_by_its_outputs():
    model = _model(opset=13, head_training=None)
    model.graph.node[5].output.extend(["m", "v", "sm", "sv"])
    modes = plan_modes(model, ["w1"], ["y"])
    assert [m.exported for m in modes if m.op_type == "BatchNormalization"] == ["eval", "train"]


def test_unknown_mode_is_one_clear_error():
    with pytest.raises(TrainingError, match="unknown batchnorm mode 'frozen'; choose one of as-exported"):
        plan_modes(_model(), ["w1"], ["y"], batchnorm="frozen")


def test_eval_rewrite_computes_batchnorm_and_dropout_in_inference_mode():
    """Everything in eval mode: plain ops, the same outputs as the inference-mode model."""
    ort = pytest.importorskip("onnxruntime")
    model = _model(head_training=None)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    for node in reference.graph.node:
        if node.op_type == "Dropout":
            del node.input[2:]
    modes = plan_modes(model, ["w1"], ["y"], batchnorm="eval", dropout="off")
    rewrite = apply_modes(model, modes)
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "Dropout" not in ops and not rewrite.updates
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    from onnx_stopgrad import session_options

    def run(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(
            m.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
        )
        return session.run(["y"], {"x": x})[0]

    np.testing.assert_allclose(run(model), run(reference), rtol=1e-5, atol=1e-6)


def test_unknown_rank_is_refused():
    model = _model()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    modes = plan_modes(model, ["w1"], ["y"])
    with pytest.raises(TrainingError, match="cannot tell the rank of 'c0'"):
        apply_modes(model, modes)


def test_a_read_running_statistics_output_is_refused():
    model = _model()  # bn1 exported in training mode, with its two running-statistics outputs
    model.graph.output.append(helper.make_tensor_value_info("bn1.mean_out", TensorProto.FLOAT, [C]))
    modes = plan_modes(model, ["w1"], ["y"])
    with pytest.raises(TrainingError, match=r"the graph reads 'bn1\.mean_out', a running-statistics output"):
        apply_modes(model, modes)
