"""export_for_inference / ``onnx-stopgrad export``: the trained model, checked against PyTorch.

The reference is the PyTorch module of the case with the checkpoint's trained parameters
loaded into it; the exported model must give its outputs, with the StopGradient kept (op
library) and removed (plain onnxruntime, no library).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
import onnxruntime as ort
from click.testing import CliRunner
from training_cases import CASES, by_helper

from onnx_stopgrad import DOMAIN, OP_TYPE, session_options
from onnx_stopgrad.cli import main
from onnx_stopgrad.errors import TensorNotFoundError, TrainingError
from onnx_stopgrad.training import _export, export_for_inference, fit, generate_artifacts, load

pytestmark = pytest.mark.training

CASE = CASES["target_network"]  # two inputs, a stop in the middle, a float constant (gamma)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Artifacts of the target-network case after two epochs of training (checkpoint saved)."""
    directory = tmp_path_factory.mktemp("export") / "artifacts"
    torch.manual_seed(0)
    module = CASE.make()
    model = by_helper(CASE, module)
    generate_artifacts(model, loss=CASE.loss, optimizer="adamw", artifact_directory=directory)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((32, *a.shape[1:])).astype(a.dtype) for a in CASE.inputs()]
    label = rng.standard_normal((32, *CASE.label().shape[1:])).astype(CASE.label().dtype)
    names = [*CASE.input_names, "target"]
    fit(
        directory, dict(zip(names, [*inputs, label], strict=True)), epochs=2, batch_size=4, learning_rate=0.05
    )
    return directory, module, model


def _checkpoint(directory) -> dict[str, np.ndarray]:
    from onnxruntime.training.api import CheckpointState

    state = CheckpointState.load_checkpoint(str(directory / "checkpoint"))
    return {name: p.data.copy() for name, p in state.parameters}


def _torch_outputs(module, params: dict[str, np.ndarray], inputs) -> np.ndarray:
    """The case's module with ``params`` loaded (a float constant like gamma is not a module weight)."""
    state = {name: torch.from_numpy(params[name]) for name in module.state_dict()}
    module.load_state_dict(state)
    with torch.no_grad():
        return module(*[torch.from_numpy(a) for a in inputs]).numpy()


def test_ort_export_fails_on_stops_ours_does_not(trained, tmp_path):
    directory, module, model = trained
    _, ort_module, _ = load(directory)
    with pytest.raises(Exception, match="StopGradient"):  # ORT 1.19 cannot: why this API exists
        ort_module.export_model_for_inferencing(
            str(tmp_path / "ort.onnx"), [o.name for o in model.graph.output]
        )

    params = _checkpoint(directory)
    initial = {name: p.detach().numpy() for name, p in CASE.make().named_parameters()}  # fresh, not trained
    assert any(not np.array_equal(params[n], v) for n, v in initial.items() if n in params)
    inputs = CASE.inputs()
    expected = _torch_outputs(module, params, inputs)
    feeds = dict(zip(CASE.input_names, inputs, strict=True))

    kept = export_for_inference(directory, tmp_path / "kept.onnx")
    proto = onnx.load(str(kept))
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node].count(OP_TYPE) == 1
    assert [i.name for i in proto.graph.input] == list(CASE.input_names)  # labels and weights gone
    assert [o.name for o in proto.graph.output] == [o.name for o in model.graph.output]
    assert proto.ir_version <= 10
    assert _export.OUTPUTS_METADATA_KEY not in {p.key for p in proto.metadata_props}
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, value in params.items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)
    session = ort.InferenceSession(str(kept), session_options(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=1e-5, atol=1e-6)

    plain = export_for_inference(directory, tmp_path / "plain.onnx", keep_stops=False)
    proto = onnx.load(str(plain))
    assert OP_TYPE not in {n.op_type for n in proto.graph.node}
    assert DOMAIN not in {o.domain for o in proto.opset_import}
    session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])  # no library
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=1e-5, atol=1e-6)


def test_state_in_memory_and_external_data(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(_export, "_SMALL_TENSOR", 0)  # this model's weights are all < 1 KiB
    directory, module, _ = trained
    state, ort_module, optimizer = load(directory)
    ort_module.train()
    inputs, label = CASE.inputs(), CASE.label()
    ort_module(*inputs, label)
    optimizer.step()  # one more step, not saved: the export must use this state, not the file
    params = {name: p.data.copy() for name, p in state.parameters}
    assert any(not np.array_equal(params[n], v) for n, v in _checkpoint(directory).items())
    path = export_for_inference(directory, tmp_path / "m.onnx", state=state, external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    proto = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(CASE.input_names, inputs, strict=True)))[0]
    np.testing.assert_allclose(got, _torch_outputs(module, params, inputs), rtol=1e-5, atol=1e-6)


def test_output_names_and_errors(trained, tmp_path):
    directory, _, model = trained
    old = tmp_path / "m.onnx"
    old.write_bytes(b"old")
    with pytest.raises(TensorNotFoundError, match="'nope'"):
        export_for_inference(directory, old, output_names=["nope"])
    assert old.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]
    # Artifacts made by ORT's own function do not record the model's outputs: name them.
    from onnxruntime.training import artifacts

    from onnx_stopgrad import remove_stop_gradient

    plain, _ = remove_stop_gradient(model)
    plain.ir_version = 10
    (tmp_path / "ort").mkdir()
    artifacts.generate_artifacts(
        plain, requires_grad=["q.fc2.bias"], loss=artifacts.LossType.MSELoss,
        artifact_directory=tmp_path / "ort",
    )  # fmt: skip
    with pytest.raises(TrainingError, match="output_names"):
        export_for_inference(tmp_path / "ort", tmp_path / "x.onnx")
    path = export_for_inference(tmp_path / "ort", tmp_path / "x.onnx", output_names=["y"])
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["y"]


def test_cli_export(trained, tmp_path):
    directory, module, _ = trained
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(directory), "-o", str(out), "--no-stops"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "StopGradient removed" in result.output
    inputs = CASE.inputs()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(CASE.input_names, inputs, strict=True)))[0]
    np.testing.assert_allclose(
        got, _torch_outputs(module, _checkpoint(directory), inputs), rtol=1e-5, atol=1e-6
    )

    result = CliRunner().invoke(main, ["export", str(tmp_path / "missing"), "-o", str(out)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1
