"""BatchNorm/Dropout modes against PyTorch: a frozen backbone in eval mode, a trainable head.

ResNet-18- and MobileNetV3-small-style CNNs (tests/training/realarch_models.py), stopped
after an inner stage, exported in eval mode and in training mode. PyTorch runs the same
module in float64 (float32 rounding alone differs by ~1e-5 where BatchNorm trains on small
batches) with ``.detach()`` at the stop, the backbone in eval mode and the head in the
exported mode. Compared after 1 and 3 AdamW steps: the loss and every gradient (1e-5
relative), the trainable set, the trained weights, the running statistics the head
updates, and the frozen tensors of the checkpoint bit for bit.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import onnx
from mode_reference import data, ort_steps, relative, set_modes, torch_steps
from realarch_models import MobileNetish, ResNetish, export, perturb

from onnx_stopgrad.training import export_for_inference, generate_artifacts

pytestmark = pytest.mark.training

MODELS = {"resnet": ResNetish, "mobilenet": MobileNetish}


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("exported", ["eval", "train"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_frozen_backbone_trains_as_pytorch(name, exported, steps, tmp_path):
    torch.manual_seed(0)
    module = perturb(MODELS[name]())
    if name == "mobilenet":
        module.classifier[2].p = 0.0  # Dropout in train mode is random: exactness needs p=0
    x, label = data()
    set_modes(module, head_training=exported == "train")
    model = export(module, x)
    initial = {t.name: onnx.numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    report = generate_artifacts(model, loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path)

    batchnorms = [m for m in report.modes if m.op_type == "BatchNormalization"]
    assert batchnorms and all(m.mode == "eval" for m in batchnorms if m.region == "frozen")
    assert {m.mode for m in batchnorms if m.region == "trainable"} == {exported}
    backbone = tuple(f"{prefix}." for prefix in module.backbone)
    expected_trainable = {n for n, _ in module.named_parameters() if not n.startswith(backbone)}
    assert set(report.trainable) == expected_trainable

    (ort_loss, ort_grads), _ = ort_steps(tmp_path, x, label, steps)
    (ref_loss, ref_grads), ref_after = torch_steps(copy.deepcopy(module), x, label, report.trainable, steps)

    assert abs(ort_loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert set(ort_grads) == expected_trainable
    # A gradient that is zero in exact arithmetic (a bias whose shift the next training-mode
    # BatchNorm removes) is compared relative to 1e-3 of the largest gradient instead.
    floor = 1e-3 * max(float(np.abs(g).max()) for g in ref_grads.values())
    for grad_name, expected in ref_grads.items():
        assert relative(ort_grads[grad_name], expected, floor) <= 1e-5, grad_name

    from onnxruntime.training.api import CheckpointState

    saved = dict(CheckpointState.load_checkpoint(str(tmp_path / "checkpoint")).parameters)
    for tensor_name, before in initial.items():
        if tensor_name not in saved:
            continue
        after = saved[tensor_name].data
        if tensor_name.startswith(backbone):  # frozen: bit for bit
            assert np.array_equal(after, before), tensor_name
        elif tensor_name in expected_trainable:
            np.testing.assert_allclose(after, ref_after[tensor_name], rtol=0, atol=1e-4, err_msg=tensor_name)
        else:  # the head's running statistics: updated as PyTorch does, or untouched in eval mode
            np.testing.assert_allclose(
                after, ref_after[tensor_name], rtol=1e-5, atol=1e-6, err_msg=tensor_name
            )
            assert np.array_equal(after, before) == (exported == "eval"), tensor_name
    assert {n for n in initial if "running" in n} <= set(saved)


def test_exported_model_has_the_trained_statistics(tmp_path):
    """export_for_inference after training in train mode equals PyTorch's model.eval()."""
    torch.manual_seed(0)
    module = set_modes(perturb(ResNetish()), head_training=True)
    x, label = data()
    model = export(module, x)
    generate_artifacts(model, loss="crossentropy", optimizer="sgd", artifact_directory=tmp_path / "a")
    _, state = ort_steps(tmp_path / "a", x, label, steps=2)
    path = export_for_inference(tmp_path / "a", tmp_path / "out.onnx", state=state, keep_stops=False)
    exported = onnx.load(str(path))
    assert [n.output[:] for n in exported.graph.node if n.op_type == "BatchNormalization"]
    assert all(len(n.output) == 1 for n in exported.graph.node if n.op_type == "BatchNormalization")
    reference = copy.deepcopy(module).eval()
    with torch.no_grad():
        for name, value in state.parameters:
            reference.state_dict()[name].copy_(torch.from_numpy(np.asarray(value.data)))
        expected = reference(torch.from_numpy(x)).numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    stats = [n for n, _ in state.parameters if n.startswith("layer3") and "running" in n]
    assert stats and not any(
        np.array_equal(state.parameters[n].data, module.state_dict()[n].numpy()) for n in stats
    )


def test_dynamo_export(tmp_path):
    """torch.onnx.export(dynamo=True, optimize=False) writes BatchNormalization without a
    training_mode attribute (inference mode); stopped with ``stop_at`` at the tensor the
    module detaches, three steps match PyTorch with the whole model in eval mode."""
    import warnings

    torch.manual_seed(0)
    module = perturb(ResNetish()).eval()
    x, label = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (torch.from_numpy(x),), dynamo=True, optimize=False, verbose=False
        )
    model = program.model_proto
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] == "layer3.conv1.weight")
    report = generate_artifacts(
        model, loss="crossentropy", optimizer="adamw", artifact_directory=tmp_path, stop_at=[conv.input[0]]
    )
    assert [m.region for m in report.modes].count("frozen") == 6
    assert {m.mode for m in report.modes} == {"eval"}
    (ort_loss, ort_grads), state = ort_steps(tmp_path, x, label, steps=3)
    (ref_loss, ref_grads), ref_after = torch_steps(copy.deepcopy(module), x, label, report.trainable, steps=3)
    assert abs(ort_loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert (
        set(ort_grads)
        == set(ref_grads)
        == {n for n, _ in module.named_parameters() if n.startswith(("layer3.", "fc."))}
    )
    for name, expected in ref_grads.items():
        assert relative(ort_grads[name], expected, 1e-12) <= 1e-5, name
    for name, param in state.parameters:
        if "running" in name:
            assert np.array_equal(param.data, module.state_dict()[name].numpy()), name
        elif param.requires_grad:
            np.testing.assert_allclose(param.data, ref_after[name], rtol=0, atol=1e-4, err_msg=name)


def test_untrained_export_is_the_source_model(tmp_path):
    """Before any step, export_for_inference of an eval export gives back the source model's
    nodes (BatchNorm and HardSwish/HardSigmoid restored) and, run by ONNX Runtime, its
    outputs bit for bit."""
    import onnxruntime as ort

    from onnx_stopgrad import session_options

    torch.manual_seed(0)
    module = perturb(MobileNetish()).eval()
    x, _ = data()
    model = export(module, x)
    model.ir_version = 10
    generate_artifacts(model, loss="crossentropy", optimizer="sgd", artifact_directory=tmp_path / "a")
    path = export_for_inference(tmp_path / "a", tmp_path / "out.onnx")
    exported = onnx.load(str(path))

    def op_types(m: onnx.ModelProto) -> list[str]:
        return sorted(n.op_type for n in m.graph.node if n.op_type not in ("Constant", "Identity"))

    assert op_types(exported) == op_types(model)
    runs = []
    for candidate in (model, exported):
        session = ort.InferenceSession(
            candidate.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
        )
        runs.append(session.run(None, {"x": x})[0])
    assert np.array_equal(runs[0], runs[1])
