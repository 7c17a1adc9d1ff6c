"""The mode overrides (batchnorm=/dropout=, CLI --batchnorm/--dropout), Dropout behind and
after a stop, ``fit`` keeping running statistics, and ``analyze`` listing the modes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from click.testing import CliRunner
from mode_reference import data, ort_steps, relative, set_modes, torch_steps
from realarch_models import ResNetish, export, perturb
from torch import nn
from training_cases import detach

from onnx_stopgrad.analysis import analyze
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import TrainingError
from onnx_stopgrad.training import RunningStatistics, fit, generate_artifacts, load

pytestmark = pytest.mark.training


class DropoutNet(nn.Module):
    """Linear-ReLU-Dropout backbone, a stop, then Linear-Dropout-Linear."""

    backbone = ("body",)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x, stop=detach):
        return self.head(stop(self.body(x)))


def _dropout_model() -> tuple[nn.Module, onnx.ModelProto, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    module = DropoutNet().train()
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    label = np.array([0, 2, 1, 2], dtype=np.int64)
    return module, export(module, x), x, label


def test_dropout_behind_the_stop_is_off_and_head_follows_the_override(tmp_path):
    module, model, x, label = _dropout_model()
    exported = [n for n in model.graph.node if n.op_type == "Dropout"]
    assert len(exported) == 2  # training-mode export: both Dropouts present
    report = generate_artifacts(
        model, loss="crossentropy", optimizer="sgd", artifact_directory=tmp_path / "off", dropout="off"
    )
    assert [(m.region, m.exported, m.mode) for m in report.modes] == [
        ("frozen", "train", "eval"), ("trainable", "train", "eval")
    ]  # fmt: skip
    # Everything deterministic now: PyTorch with every Dropout off gives the same loss and gradients.
    reference = copy.deepcopy(module).eval()
    params = dict(reference.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in report.trainable)
    loss = torch.nn.functional.cross_entropy(reference(torch.from_numpy(x)), torch.from_numpy(label))
    loss.backward()
    state, ort_module, _ = load(tmp_path / "off")
    ort_module.train()
    ort_loss = float(np.asarray(ort_module(x, label)))
    assert abs(ort_loss - loss.item()) <= 1e-5 * abs(loss.item())
    for name in report.trainable:
        expected = params[name].grad.numpy()
        assert relative(state.parameters[name].grad, expected, 1e-12) <= 1e-5, name

    report = generate_artifacts(
        model, loss="crossentropy", optimizer="sgd", artifact_directory=tmp_path / "on"
    )
    assert [(m.region, m.mode) for m in report.modes] == [("frozen", "eval"), ("trainable", "train")]
    _, ort_module, _ = load(tmp_path / "on")
    ort_module.train()
    losses = {float(np.asarray(ort_module(x, label))) for _ in range(6)}
    assert len(losses) > 1  # the head's Dropout draws a new mask each step
    ort_module.eval()
    assert abs(float(np.asarray(ort_module(x, label))) - ort_loss) <= 1e-5 * ort_loss  # eval model: off


def test_batchnorm_train_override_on_an_eval_export(tmp_path):
    """An eval-mode export trained with batchnorm="train": PyTorch's head in train mode."""
    torch.manual_seed(0)
    module = set_modes(perturb(ResNetish()), head_training=False)
    x, label = data()
    model = export(module, x)
    report = generate_artifacts(model, loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path,
                                batchnorm="train")  # fmt: skip
    assert {(m.region, m.exported, m.mode) for m in report.modes} == {
        ("frozen", "eval", "eval"), ("trainable", "eval", "train")
    }  # fmt: skip
    assert any("running statistic(s) update" in line for line in report.adjustments)
    (ort_loss, ort_grads), state = ort_steps(tmp_path, x, label, steps=1)
    reference = set_modes(copy.deepcopy(module), head_training=True)
    (ref_loss, ref_grads), ref_after = torch_steps(reference, x, label, report.trainable, steps=1)
    assert abs(ort_loss - ref_loss) <= 1e-5 * abs(ref_loss)
    for name, expected in ref_grads.items():
        assert relative(ort_grads[name], expected, 1e-12) <= 1e-5, name
    for name in ("layer3.bn1.running_mean", "layer3.bn1.running_var", "bn1.running_var"):
        np.testing.assert_allclose(state.parameters[name].data, ref_after[name], rtol=1e-5, err_msg=name)


def test_fit_keeps_running_statistics(tmp_path):
    """fit() copies the updated statistics into the checkpoint: two epochs of one batch are
    two PyTorch SGD steps (float64, head in train mode); the backbone's stay bit for bit."""
    torch.manual_seed(0)
    module = set_modes(perturb(ResNetish()), head_training=True)
    x, label = data()
    generate_artifacts(export(module, x), loss="crossentropy", optimizer="sgd", artifact_directory=tmp_path)
    assert RunningStatistics.of(tmp_path)
    _, _, optimizer = load(tmp_path)
    lr = optimizer.get_learning_rate()
    fit(tmp_path, {"x": x, "labels": label}, epochs=2, batch_size=4)
    from onnxruntime.training.api import CheckpointState

    saved = dict(CheckpointState.load_checkpoint(str(tmp_path / "checkpoint")).parameters)
    reference = copy.deepcopy(module).double()
    trainable = [n for n, p in saved.items() if p.requires_grad]
    params = dict(reference.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    for _ in range(2):
        for p in params.values():
            p.grad = None
        out = reference(torch.from_numpy(x).double())
        torch.nn.functional.cross_entropy(out, torch.from_numpy(label)).backward()
        with torch.no_grad():
            for name in trainable:
                params[name] -= lr * params[name].grad
    after = reference.state_dict()
    for name, tensor in module.state_dict().items():
        if "running" not in name:
            continue
        if name.startswith(("bn1.", "layer1.", "layer2.")):
            assert np.array_equal(saved[name].data, tensor.numpy()), name
        else:
            assert not np.array_equal(saved[name].data, tensor.numpy()), name
            np.testing.assert_allclose(
                saved[name].data, after[name].numpy(), rtol=1e-5, atol=1e-7, err_msg=name
            )


def test_running_statistic_in_requires_grad_is_refused(tmp_path):
    torch.manual_seed(0)
    module = set_modes(perturb(ResNetish()), head_training=True)
    x, _ = data()
    with pytest.raises(TrainingError, match="running statistic: it is never trained"):
        generate_artifacts(export(module, x), requires_grad=["fc.weight", "layer3.bn1.running_mean"],
                           loss="crossentropy", artifact_directory=tmp_path)  # fmt: skip


def test_cli_modes_and_analyze(tmp_path):
    torch.manual_seed(0)
    module = set_modes(perturb(ResNetish()), head_training=False)
    x, _ = data()
    path = tmp_path / "resnet.onnx"
    onnx.save(export(module, x), str(path))
    runner = CliRunner()
    result = runner.invoke(main, ["artifacts", str(path), "--loss", "crossentropy", "-o", str(tmp_path / "a"),
                                  "--batchnorm", "train"], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "BatchNormalization eval, frozen (6): /inner/bn1/BatchNormalization" in result.output
    assert "BatchNormalization train, trainable (3): /inner/layer3/bn1/BatchNormalization" in result.output
    result = runner.invoke(main, ["artifacts", str(path), "--loss", "crossentropy", "-o", str(tmp_path / "b"),
                                  "--json"], catch_exceptions=False)  # fmt: skip
    modes = json.loads(result.output)["modes"]
    assert len(modes) == 9 and {m["mode"] for m in modes} == {"eval"}
    assert {m["region"] for m in modes} == {"frozen", "trainable"}
    result = runner.invoke(main, ["artifacts", str(path), "--loss", "crossentropy", "-o", str(tmp_path / "c"),
                                  "--batchnorm", "sometimes"])  # fmt: skip
    assert result.exit_code != 0 and "sometimes" in result.output

    report = analyze(str(path), use_onnxruntime=False)
    assert [(m.name, m.mode, m.region) for m in report.modes] == [
        (m["node"], m["mode"], m["region"]) for m in modes
    ]
    assert "BatchNormalization eval, frozen (6)" in report.format_text()
