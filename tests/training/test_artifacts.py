"""generate_artifacts beyond the numerics: ORT parity without stops, real exports, errors, files."""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from training_cases import CASES, StopForExport, by_helper, detach, export_torchscript
from training_reference import assert_same_artifacts, ort_run, torch_run

from onnx_stopgrad import DOMAIN, OP_TYPE
from onnx_stopgrad.errors import ModelLoadError, TensorNotFoundError, TrainingError
from onnx_stopgrad.training import (
    _artifacts,
    generate_artifacts,
    load,
)

pytestmark = pytest.mark.training

BACKBONE = CASES["backbone"]


def _backbone(stop: bool = True) -> onnx.ModelProto:
    torch.manual_seed(0)
    model = by_helper(BACKBONE, BACKBONE.make())
    if not stop:  # read the backbone output directly: a model with no StopGradient at all
        node = next(n for n in model.graph.node if n.op_type == OP_TYPE)
        model.graph.node.remove(node)
        for other in model.graph.node:
            other.input[:] = [node.input[0] if name == node.output[0] else name for name in other.input]
        del model.opset_import[1:]
    return model


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_without_stops_same_artifacts_as_ort(tmp_path):
    from onnxruntime.training import artifacts, onnxblock

    model = _backbone(stop=False)
    ours = generate_artifacts(
        model, loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path / "ours"
    )
    assert ours.frozen == () and ours.stops == () and ours.gradient_nodes_removed == 0
    plain = copy.deepcopy(model)
    plain.ir_version = 10  # ORT's own function would write IR 14 models that ORT cannot load
    (tmp_path / "ort").mkdir()
    artifacts.generate_artifacts(
        plain, requires_grad=list(ours.trainable),
        loss=onnxblock.loss.CrossEntropyLoss(ignore_index=-100),  # "crossentropy" ignores -100, as torch
        optimizer=artifacts.OptimType.AdamW, artifact_directory=tmp_path / "ort",
    )  # fmt: skip
    assert_same_artifacts(tmp_path / "ours", tmp_path / "ort")


class _Encoder(torch.nn.Module):
    """Two transformer layers with a stop between them and a classification head."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.l1 = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=dropout, batch_first=True)
        self.l2 = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=dropout, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x, stop=detach):
        return self.head(self.l2(stop(self.l1(x))).mean(1))


def _encoder(dropout: float = 0.0) -> _Encoder:
    torch.manual_seed(0)
    encoder = _Encoder(dropout).train()
    with torch.no_grad():  # distinct values: exporters merge initializers that are equal
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return encoder


def _check_encoder_training(model, encoder, x, tmp_path, adjusted: list[str]) -> None:
    report = generate_artifacts(model, loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path)
    for op in adjusted:
        assert any(op in line for line in report.adjustments), report.adjustments
    names = {n for n, _ in encoder.named_parameters()}
    assert set(report.trainable) == {n for n in names if not n.startswith("l1.")}
    assert set(report.frozen) == {n for n in names if n.startswith("l1.")}

    label = np.array([0, 2], dtype=np.int64)
    case = type("C", (), {"loss": "crossentropy"})()
    (ort_loss, ort_grads), ort_params = ort_run(tmp_path, [x], label)
    (ref_loss, ref_grads), ref_params = torch_run(copy.deepcopy(encoder), case, [x], label, report.trainable)
    assert abs(ort_loss - ref_loss) <= 1e-5 * abs(ref_loss)
    for name, expected in ref_grads.items():
        assert np.abs(ort_grads[name] - expected).max() <= 1e-5 * np.abs(expected).max() + 1e-7, name
    for name, expected in ref_params.items():
        np.testing.assert_allclose(ort_params[name], expected, rtol=0, atol=1e-4, err_msg=name)


def _sharing(encoder, stop) -> torch.nn.Module:
    """A module with ``encoder``'s layers whose forward stops the gradient with ``stop``."""

    class Sharing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2, self.head = encoder.l1, encoder.l2, encoder.head

        def forward(self, x):
            return _Encoder.forward(self, x, stop=stop)

    return Sharing()


def test_transformer_torchscript_export(tmp_path):
    """LayerNormalization exported with one output: fixed, reported, and gradients right."""
    encoder = _encoder()

    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    model = export_torchscript(_sharing(encoder, StopForExport.apply).train(), (torch.from_numpy(x),), ["x"])
    assert any(n.op_type == "LayerNormalization" and len(n.output) == 1 for n in model.graph.node)
    _check_encoder_training(model, encoder, x, tmp_path, ["LayerNormalization"])


def test_transformer_dynamo_export(tmp_path):
    """torch's default exporter: CastLike (no ORT gradient) and one-output LayerNorm, fixed."""
    pytest.importorskip("onnxscript")
    from onnx_stopgrad import torch as sg_torch

    encoder = _encoder()

    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sg_torch.export(_sharing(encoder, detach).train(), (torch.from_numpy(x),), tmp_path / "m.onnx",
                        input_names=["x"], dynamo=True, optimize=False)  # fmt: skip
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert any(n.op_type == "CastLike" for n in model.graph.node)
    _check_encoder_training(model, encoder, x, tmp_path / "a", ["LayerNormalization", "CastLike"])


def test_dropout_export_trains(tmp_path):
    """Attention dropout is exported with no mask output; ORT's DropoutGrad needs it."""
    encoder = _encoder(dropout=0.1)

    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    model = export_torchscript(_sharing(encoder, StopForExport.apply).train(), (torch.from_numpy(x),), ["x"])
    report = generate_artifacts(model, loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path)
    assert any("Dropout" in line for line in report.adjustments)
    state, module, optimizer = load(tmp_path)
    module.train()
    before = state.parameters["head.weight"].data.copy()
    loss = module(x, np.array([0, 2], dtype=np.int64))
    optimizer.step()
    assert np.isfinite(loss) and not np.array_equal(state.parameters["head.weight"].data, before)


def test_user_lists(tmp_path):
    model = _backbone()
    report = generate_artifacts(
        model, frozen_params=["head.bias"], loss="crossentropy", artifact_directory=tmp_path / "a"
    )
    assert report.trainable == ("head.weight",)
    assert "head.bias" in report.frozen and "backbone.fc1.weight" in report.frozen
    report = generate_artifacts(
        model, requires_grad=["head.bias"], loss="crossentropy", artifact_directory=tmp_path / "b"
    )
    assert report.trainable == ("head.bias",)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"requires_grad": ["backbone.fc1.weight"]},
            TrainingError,
            ["backbone.fc1.weight", "StopGradient 'stop'"],
        ),
        ({"requires_grad": ["nope"]}, TensorNotFoundError, ["'nope'"]),
        ({"frozen_params": ["nope"]}, TensorNotFoundError, ["'nope'"]),
        ({"requires_grad": ["head.bias"], "frozen_params": ["head.bias"]}, TrainingError, ["both"]),
        ({"loss": "hinge"}, TrainingError, ["hinge", "mse"]),
    ],
)
def test_user_errors_leave_nothing(tmp_path, kwargs, error, words):
    kwargs = {"loss": "crossentropy", **kwargs}
    with pytest.raises(error) as info:
        generate_artifacts(_backbone(), artifact_directory=tmp_path / "out", **kwargs)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert _files(tmp_path) == []


def test_failure_half_way_keeps_old_artifacts(tmp_path, monkeypatch):
    model_path = tmp_path / "model.onnx"
    onnx.save(_backbone(), str(model_path))
    before = model_path.read_bytes()
    target = tmp_path / "out"
    generate_artifacts(model_path, loss="crossentropy", optimizer="sgd", artifact_directory=target)
    old = {name: (target / name).read_bytes() for name in _files(target)}

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while restoring the stops")

    monkeypatch.setattr(_artifacts, "restore_stops", broken)
    with pytest.raises(RuntimeError):
        generate_artifacts(model_path, loss="mse", optimizer="adamw", artifact_directory=target)
    with pytest.raises(RuntimeError):
        generate_artifacts(model_path, loss="mse", artifact_directory=tmp_path / "new")
    assert {name: (target / name).read_bytes() for name in _files(target)} == old
    assert _files(tmp_path) == ["model.onnx", "out"]  # no half-built folder, no staging left
    assert model_path.read_bytes() == before


def test_ir_version_opset_and_custom_domain(tmp_path, monkeypatch):
    model = _backbone()
    model.opset_import[0].version = 22
    assert model.ir_version > 10
    monkeypatch.chdir(tmp_path)  # artifact_directory=None: the current directory, like ORT
    report = generate_artifacts(model, loss="crossentropy", optimizer="adamw")
    assert _files(tmp_path) == [
        "checkpoint",
        "eval_model.onnx",
        "optimizer_model.onnx",
        "training_model.onnx",
    ]
    assert any(line.startswith("IR version") for line in report.adjustments)
    assert any(line.startswith("opset 22 -> 21") for line in report.adjustments)
    assert model.ir_version > 10 and model.opset_import[0].version == 22, "the caller's model changed"
    training = onnx.load(str(tmp_path / "training_model.onnx"))
    assert any(o.domain == DOMAIN for o in training.opset_import)


def test_errors_on_bad_inputs(tmp_path):
    with pytest.raises(ModelLoadError):
        generate_artifacts(tmp_path / "missing.onnx", loss="mse", artifact_directory=tmp_path / "a")
    with pytest.raises(TrainingError, match="no such directory"):
        load(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(TrainingError, match="checkpoint is missing"):
        load(tmp_path / "half")


def _tiny(nodes, outputs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    weights = {n: rng.standard_normal((4, 4)).astype(np.float32) for n in ("W1", "W2")}
    graph = onnx.helper.make_graph(
        nodes, "tiny", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, [2, 4]) for o in outputs],
        [onnx.numpy_helper.from_array(v, n) for n, v in weights.items()],
    )  # fmt: skip
    opsets = [onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid(DOMAIN, 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets), weights


def _stop(src: str, dst: str, name: str) -> onnx.NodeProto:
    return onnx.helper.make_node(OP_TYPE, [src], [dst], name=name, domain=DOMAIN)


def _ort_first_step(directory, *inputs):
    state, module, _ = load(directory)
    module.train()
    outputs = module(*inputs)
    loss = float(outputs[0] if isinstance(outputs, (tuple, list)) else outputs)
    return loss, {name: p.grad.copy() for name, p in state.parameters if p.requires_grad}


def test_chained_stops_and_stop_on_an_input(tmp_path):
    mm = onnx.helper.make_node
    model, w = _tiny(
        [_stop("x", "xs", "s0"), mm("MatMul", ["xs", "W1"], ["a"]), _stop("a", "b", "s1"),
         _stop("b", "c", "s2"), mm("MatMul", ["c", "W2"], ["y"])], ["y"],
    )  # fmt: skip
    report = generate_artifacts(model, loss="mse", optimizer="adamw", artifact_directory=tmp_path)
    assert report.trainable == ("W2",) and report.frozen == ("W1",)
    x, target = np.ones((2, 4), np.float32), np.zeros((2, 4), np.float32)
    loss, grads = _ort_first_step(tmp_path, x, target)
    W1, W2 = (torch.tensor(w[n], requires_grad=True) for n in ("W1", "W2"))
    ref = torch.nn.functional.mse_loss(
        (torch.tensor(x).detach() @ W1).detach().detach() @ W2, torch.tensor(target)
    )
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-5 * abs(ref.item())
    np.testing.assert_allclose(grads["W2"], W2.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_stop_output_is_a_graph_output(tmp_path):
    """The second output (the loss's target) is the stop's output: mse(a @ W2, stop(a))."""
    mm = onnx.helper.make_node
    model, w = _tiny([mm("MatMul", ["x", "W1"], ["a"]), _stop("a", "a_stopped", "s"),
                      mm("MatMul", ["a", "W2"], ["y"])], ["y", "a_stopped"])  # fmt: skip
    report = generate_artifacts(
        model,
        loss="mse",
        optimizer="adamw",
        artifact_directory=tmp_path,
        additional_output_names=["a_stopped"],
    )
    assert report.trainable == ("W1", "W2")
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    loss, grads = _ort_first_step(tmp_path, x)
    W1, W2 = (torch.tensor(w[n], requires_grad=True) for n in ("W1", "W2"))
    a = torch.tensor(x) @ W1
    ref = torch.nn.functional.mse_loss(a @ W2, a.detach())
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-5 * abs(ref.item())
    for name, tensor in (("W1", W1), ("W2", W2)):
        assert np.abs(grads[name] - tensor.grad.numpy()).max() <= 1e-5 * np.abs(tensor.grad.numpy()).max()


def _constants_model(op: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``y = f(x @ W)`` where f reads a float initializer at an input ORT cannot differentiate."""
    mm = onnx.helper.make_node
    rng = np.random.default_rng(1)
    values = {"W": rng.standard_normal((4, 4)).astype(np.float32)}
    nodes = [mm("MatMul", ["x", "W"], ["a"])]
    if op == "Pow":  # exponent
        values["p"] = np.array(2.0, np.float32)
        nodes.append(mm("Pow", ["a", "p"], ["y"]))
    elif op == "Clip":  # min and max
        values.update(lo=np.array(-0.5, np.float32), hi=np.array(0.5, np.float32))
        nodes.append(mm("Clip", ["a", "lo", "hi"], ["y"]))
    elif op == "BatchNormalization":  # running mean and variance (scale and bias do train)
        values.update(s=np.full(4, 1.5, np.float32), b=np.full(4, 0.1, np.float32),
                      mu=np.full(4, 0.2, np.float32), var=np.full(4, 2.0, np.float32))  # fmt: skip
        nodes.append(mm("BatchNormalization", ["a", "s", "b", "mu", "var"], ["y"]))
    elif op == "Shape":  # a float tensor read only for its shape
        values["like"] = np.zeros((2, 4), np.float32)
        nodes += [mm("Shape", ["like"], ["shape"]), mm("Reshape", ["a", "shape"], ["y"])]
    graph = onnx.helper.make_graph(
        nodes, "constants", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.numpy_helper.from_array(v, n) for n, v in values.items()],
    )  # fmt: skip
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), values


def _torch_constants(op: str, a: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    if op == "Pow":
        return a ** v["p"]
    if op == "Clip":
        return a.clamp(v["lo"], v["hi"])
    if op == "BatchNormalization":  # exported in inference mode: trains with its running statistics
        return torch.nn.functional.batch_norm(
            a, v["mu"].clone(), v["var"].clone(), v["s"], v["b"], training=False
        )
    return a.reshape(2, 4)


@pytest.mark.parametrize("op", ["Pow", "Clip", "BatchNormalization", "Shape"])
def test_constants_ort_cannot_differentiate_are_not_trained(op, tmp_path):
    """By default only what ORT differentiates trains; the rest stays a constant (reported)."""
    model, values = _constants_model(op)
    report = generate_artifacts(model, loss="mse", optimizer="adamw", artifact_directory=tmp_path)
    expected = {"W", "s", "b"} & set(values)  # what torch gives a gradient through f
    statistics = {"mu", "var"} & set(values)  # running statistics: frozen, never trained
    assert set(report.trainable) == expected and set(report.frozen) == statistics
    for name in set(values) - expected - statistics:
        assert f"{name}: ONNX Runtime cannot differentiate it here; kept as a constant" in report.adjustments
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    target = np.full((2, 4), 0.3, np.float32)
    loss, grads = _ort_first_step(tmp_path, x, target)
    tensors = {n: torch.tensor(v, requires_grad=n in expected) for n, v in values.items()}
    ref = torch.nn.functional.mse_loss(
        _torch_constants(op, torch.tensor(x) @ tensors["W"], tensors), torch.tensor(target)
    )
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-5 * abs(ref.item())
    assert set(grads) == expected
    for name in expected:
        np.testing.assert_allclose(grads[name], tensors[name].grad.numpy(), rtol=1e-5, atol=1e-6)


def test_only_constants_reach_the_loss(tmp_path, caplog):
    """y = x ** p: the one float initializer is an exponent, so nothing trains (a warning, as ORT builds)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Pow", ["x", "p"], ["y"])], "pow",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "p")],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with caplog.at_level("WARNING", logger="onnx_stopgrad"):
        report = generate_artifacts(model, loss="mse", artifact_directory=tmp_path / "a")
    assert report.trainable == () and "only through inputs ONNX Runtime does not differentiate" in caplog.text


def test_artifact_folder_gets_the_users_umask(tmp_path):
    """ORT's own artifact folder is made with the umask (0755 under 022), not mkdtemp's 0700."""
    old = os.umask(0o027)
    try:
        generate_artifacts(_backbone(), loss="crossentropy", artifact_directory=tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


def test_callers_proto_is_never_changed(tmp_path):
    """Stops detached in place, a stop inserted, the removed count measured: all on private
    copies; the caller's ModelProto stays byte-identical."""
    model = _backbone()
    first = model.graph.node[0].output[0]
    before = model.SerializeToString()
    report = generate_artifacts(
        model, loss="crossentropy", artifact_directory=tmp_path / "a", stop_at=[first]
    )
    assert report.inserted and report.gradient_nodes_removed is not None and report.gradient_nodes_removed > 0
    assert model.SerializeToString() == before
