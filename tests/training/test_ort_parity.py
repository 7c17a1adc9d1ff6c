"""Drop-in parity: wherever ORT's generate_artifacts builds, ours builds the same artifacts.

The cases follow ONNX Runtime 1.19's own artifact tests (a model without weights, a custom
onnxblock loss with two inputs, ``additional_output_names``, a Dropout model's eval graph),
written here in this project's style. Each runs both functions and compares the folders.
The one deliberate difference, ``requires_grad=None`` training what reaches the loss, has
its own test.
"""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from training_reference import assert_same_artifacts

from onnx_stopgrad.training import generate_artifacts

pytestmark = pytest.mark.training


def _export(module: torch.nn.Module, *inputs: torch.Tensor, **options) -> onnx.ModelProto:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(module, inputs, buffer, dynamo=False, do_constant_folding=False, **options)
    return onnx.load_from_string(buffer.getvalue())


def _both(tmp_path, model: onnx.ModelProto, differing: tuple[str, ...] = (), **kwargs) -> tuple:
    """Run ORT's function and ours with the same arguments (a ``loss`` string names ORT's
    LossType member); returns our report."""
    from onnxruntime.training import artifacts

    if isinstance(kwargs.get("loss"), str):
        kwargs["loss"] = getattr(artifacts.LossType, kwargs["loss"])
    ort_model = copy.deepcopy(model)
    ort_model.ir_version = min(ort_model.ir_version, 10)  # ORT 1.19 writes what it cannot load
    (tmp_path / "ort").mkdir()
    artifacts.generate_artifacts(
        ort_model, artifact_directory=tmp_path / "ort", **{k: copy.deepcopy(v) for k, v in kwargs.items()}
    )
    ours = generate_artifacts(
        model, artifact_directory=tmp_path / "ours", **{k: copy.deepcopy(v) for k, v in kwargs.items()}
    )
    assert_same_artifacts(tmp_path / "ours", tmp_path / "ort", differing)
    return ours


class _Dropout(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(p=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)


class _TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


def _dropout_model() -> onnx.ModelProto:
    return _export(_Dropout(), torch.randn(2, 5), training=torch.onnx.TrainingMode.TRAINING)


def _training_ops(directory) -> list[str]:
    return [n.op_type for n in onnx.load(str(directory / "training_model.onnx")).graph.node]


def test_model_without_weights_builds_with_a_warning(tmp_path, caplog):
    """Same eval model and checkpoint; the training model differs only as documented: a
    Dropout no gradient reaches runs in inference mode (ORT runs it in training mode)."""
    with caplog.at_level("WARNING", logger="onnx_stopgrad"):
        report = _both(tmp_path, _dropout_model(), ("training_model.onnx",), loss="CrossEntropyLoss")
    assert report.trainable == () and report.frozen == ()
    assert "nothing trains" in caplog.text and "no weights" in caplog.text
    assert [m.mode for m in report.modes] == ["eval"]
    assert "Dropout" in _training_ops(tmp_path / "ort") and "Dropout" not in _training_ops(tmp_path / "ours")


def test_eval_model_has_no_training_mode_dropout(tmp_path):
    _both(tmp_path, _dropout_model(), ("training_model.onnx",), loss="CrossEntropyLoss")
    eval_model = onnx.load(str(tmp_path / "ours" / "eval_model.onnx"))
    dropouts = [n for n in eval_model.graph.node if n.op_type == "Dropout"]
    assert dropouts and all(len(n.input) < 3 or not n.input[2] for n in dropouts)


def test_additional_output_names(tmp_path):
    model = _export(_TwoHeads(), torch.randn(2, 4), input_names=["x"], output_names=["o1", "o2"])
    params = ["a.weight", "a.bias"]  # what reaches the loss, which reads o1 only
    _both(
        tmp_path, model, requires_grad=params, loss="MSELoss", additional_output_names=["o2"],
        loss_input_names=["o1"],
    )  # fmt: skip
    eval_model = onnx.load(str(tmp_path / "ours" / "eval_model.onnx"))
    assert [o.name for o in eval_model.graph.output][1:] == ["o2"]


def test_custom_loss_with_two_inputs(tmp_path):
    from onnxruntime.training import artifacts, onnxblock

    class TwoTargets(onnxblock.Block):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.mse, self.add = (
                onnxblock.loss.L1Loss(),
                onnxblock.loss.MSELoss(),
                onnxblock.blocks.Add(),
            )

        def build(self, first: str, second: str) -> str:
            return self.add(self.l1(first, target_name="t1"), self.mse(second, target_name="t2"))

    model = _export(_TwoHeads(), torch.randn(2, 4), input_names=["x"], output_names=["o1", "o2"])
    params = [t.name for t in model.graph.initializer]
    report = _both(
        tmp_path, model, requires_grad=params, loss=TwoTargets(), optimizer=artifacts.OptimType.AdamW
    )
    assert set(report.trainable) == set(params)


def test_requires_grad_empty_trains_nothing_as_in_ort(tmp_path):
    model = _export(_TwoHeads(), torch.randn(2, 4), input_names=["x"], output_names=["o1", "o2"])
    report = _both(tmp_path, model, requires_grad=[], loss="MSELoss", loss_input_names=["o1"])
    assert report.trainable == ()


def test_requires_grad_none_is_the_one_deliberate_difference(tmp_path):
    """ORT trains nothing by default; this project trains what reaches the loss."""
    from onnxruntime.training import artifacts

    model = _export(_TwoHeads(), torch.randn(2, 4), input_names=["x"], output_names=["o1", "o2"])
    ort_model = copy.deepcopy(model)
    ort_model.ir_version = 10
    (tmp_path / "ort").mkdir()
    artifacts.generate_artifacts(
        ort_model,
        loss=artifacts.LossType.MSELoss,
        artifact_directory=tmp_path / "ort",
        loss_input_names=["o1"],
    )
    report = generate_artifacts(
        model, loss="mse", artifact_directory=tmp_path / "ours", loss_input_names=["o1"]
    )
    assert set(report.trainable) == {"a.weight", "a.bias"}  # b feeds only o2, which the loss does not read
    training = onnx.load(str(tmp_path / "ort" / "training_model.onnx"))
    assert not [n for n in training.graph.node if n.op_type.endswith("Grad")]
