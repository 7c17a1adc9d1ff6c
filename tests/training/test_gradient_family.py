"""Gradient scaling and straight-through in ONNX Runtime training, against PyTorch autograd.

Each model (family_cases.py) is built three ways: a plain export rewritten by the passes
(``scale_gradient`` / ``straight_through``), and ``onnx_stopgrad.torch.export`` with the
helpers under both exporters. Loss and first-step gradients must match the PyTorch
reference (hand-written autograd Functions) to 1e-5 relative, parameters after 1 and 3
AdamW steps to 1e-4; forward outputs must be bit-identical to the model without them.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

import family_cases as fc
import onnx
import onnxruntime as ort
from training_reference import ort_run, torch_run

from onnx_stopgrad import session_options
from onnx_stopgrad.passes import list_stop_gradients, scale_gradient, straight_through
from onnx_stopgrad.torch import gradient_scale
from onnx_stopgrad.torch import straight_through as st_helper
from onnx_stopgrad.training import export_for_inference, generate_artifacts

pytestmark = pytest.mark.training

MSE = SimpleNamespace(loss="mse")


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def _assert_trains_like(
    reference: torch.nn.Module, model: onnx.ModelProto, label, tmp_path, quantized: bool = False
) -> None:
    """ORT on ``model`` gives PyTorch's loss, gradients, and parameters after 1 and 3 AdamW steps.

    ``quantized``: rounding makes the loss piecewise constant in the weights, so the 1-ulp
    differences between ORT's and the reference's AdamW updates can put one weight on the
    other side of a rounding step after a few steps. Steps 2 and 3 are then checked at
    ORT's own parameters: PyTorch's gradients there must equal ORT's.
    """
    directory = tmp_path / "artifacts"
    report = generate_artifacts(
        model, loss="mse", optimizer="adamw", artifact_directory=directory, measure_removed=False
    )
    params = {name for name, _ in reference.named_parameters()}
    assert set(report.trainable) == params
    inputs = fc.inputs()
    if quantized:
        _assert_steps_at_ort_parameters(reference, directory, inputs, label, steps=3)
    for steps in (1,) if quantized else (1, 3):
        (ort_loss, ort_grads), ort_params = ort_run(directory, inputs, label, steps=steps)
        (ref_loss, ref_grads), ref_params = torch_run(
            copy.deepcopy(reference), MSE, inputs, label, report.trainable, steps=steps
        )
        assert abs(ort_loss - ref_loss) <= 1e-5 * abs(ref_loss)
        for name, expected in ref_grads.items():
            assert _relative(ort_grads[name], expected) <= 1e-5, name
        for name, expected in ref_params.items():
            np.testing.assert_allclose(ort_params[name], expected, rtol=0, atol=1e-4, err_msg=name)


def _assert_steps_at_ort_parameters(reference, directory, inputs, label, steps: int) -> None:
    """At every step, PyTorch's loss and gradients at ORT's current parameters equal ORT's."""
    from onnx_stopgrad.training import load

    state, module, optimizer = load(directory)
    module.train()
    for _ in range(steps):
        twin = copy.deepcopy(reference)
        with torch.no_grad():
            for name, param in twin.named_parameters():
                param.copy_(torch.from_numpy(state.parameters[name].data))
        loss = torch.nn.functional.mse_loss(
            twin(*[torch.from_numpy(a) for a in inputs]), torch.from_numpy(label)
        )
        loss.backward()
        ort_loss = float(np.asarray(module(*inputs, label)))
        assert abs(ort_loss - loss.item()) <= 1e-5 * abs(loss.item())
        for name, param in twin.named_parameters():
            assert _relative(state.parameters[name].grad, param.grad.numpy()) <= 1e-5, name
        optimizer.step()
        module.lazy_reset_grad()


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), session_options())
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _assert_bit_identical(model: onnx.ModelProto, plain: onnx.ModelProto) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = (rng.standard_normal((fc.B, 8)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
        x[0, 0] = -0.0
        a, b = _run(model, x), _run(plain, x)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _with_weights(module: torch.nn.Module, source: torch.nn.Module) -> torch.nn.Module:
    module.load_state_dict(source.state_dict())
    return module.train()


# -- DANN: gradient reversal ---------------------------------------------------------------------


def _dann(how: str, tmp_path) -> tuple[torch.nn.Module, onnx.ModelProto, onnx.ModelProto]:
    torch.manual_seed(0)
    reference = fc.DANN(fc.reference_scale(-fc.LAMBDA))
    args = (torch.from_numpy(fc.inputs()[0]),)
    plain = fc.export_plain(_with_weights(fc.DANN(fc.identity), reference), args)
    if how == "pass":
        features = fc.output_of(plain, "Relu")
        domain = fc.node_reading(plain, "Gemm", "domain.weight").name
        model, report = scale_gradient(plain, features, -fc.LAMBDA, [domain])
        assert report.construct is not None and report.construct.consumers == (domain,)
    else:
        module = _with_weights(fc.DANN(lambda f: gradient_scale(f, -fc.LAMBDA)), reference)
        model = fc.export_with_constructs(module, args, tmp_path / "dann.onnx", dynamo=how == "dynamo")
    return reference, model, plain


@pytest.mark.parametrize("how", ["pass", "torchscript", "dynamo"])
def test_dann_gradient_reversal_matches_pytorch(how, tmp_path):
    reference, model, plain = _dann(how, tmp_path)
    (construct,) = list_stop_gradients(model).constructs
    assert construct.kind == "gradient_scale"
    assert construct.factor == pytest.approx(-fc.LAMBDA)
    _assert_bit_identical(model, plain)
    _assert_trains_like(reference, model, fc.label(5), tmp_path)


def test_dann_export_for_inference_drops_the_construct(tmp_path):
    reference, model, plain = _dann("pass", tmp_path)
    generate_artifacts(model, loss="mse", optimizer="adamw", artifact_directory=tmp_path / "a")
    kept = export_for_inference(tmp_path / "a", tmp_path / "kept.onnx")
    dropped = export_for_inference(tmp_path / "a", tmp_path / "plain.onnx", keep_stops=False)
    kept_model, dropped_model = onnx.load(str(kept)), onnx.load(str(dropped))
    assert len(list_stop_gradients(kept_model).constructs) == 1
    assert {n.op_type for n in dropped_model.graph.node} == {n.op_type for n in plain.graph.node}
    x = fc.inputs(3)[0]
    plain_session = ort.InferenceSession(dropped_model.SerializeToString())  # no op library needed
    expected = plain_session.run(None, {"x": x})[0]
    assert np.array_equal(_run(kept_model, x), expected)
    with torch.no_grad():
        np.testing.assert_allclose(expected, reference(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


# -- Multi-task: one edge scaled -----------------------------------------------------------------


def test_multitask_auxiliary_edge_scaled_matches_pytorch(tmp_path):
    torch.manual_seed(1)
    reference = fc.MultiTask(fc.reference_scale(fc.AUX_SCALE))
    args = (torch.from_numpy(fc.inputs()[0]),)
    plain = fc.export_plain(_with_weights(fc.MultiTask(fc.identity), reference), args)
    trunk = fc.output_of(plain, "Tanh")
    aux = fc.node_reading(plain, "Gemm", "aux.weight").name
    main = fc.node_reading(plain, "Gemm", "main.weight").name
    model, report = scale_gradient(plain, trunk, fc.AUX_SCALE, [aux])
    assert report.construct is not None and report.construct.consumers == (aux,)
    readers = {n.name: list(n.input) for n in model.graph.node}
    assert trunk in readers[main] and trunk not in readers[aux]  # only the one edge
    _assert_bit_identical(model, plain)
    _assert_trains_like(reference, model, fc.label(5), tmp_path)


# -- QAT: straight-through fake quantization ----------------------------------------------------


def _fake_quant_chains(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(first, last) node of each exported FakeQuant: /wq1/Div .. /wq1/Clip."""
    chains = []
    for scope in ("/wq1/", "/aq/", "/wq2/"):
        names = [n.name for n in model.graph.node if n.name.startswith(scope)]
        first = next(n for n in names if n.endswith("Div"))
        last = next(n for n in names if n.endswith("Clip"))
        chains.append((first, last))
    return chains


@pytest.mark.parametrize("how", ["pass", "torchscript", "dynamo"])
def test_qat_straight_through_matches_pytorch(how, tmp_path):
    torch.manual_seed(2)
    reference = fc.QATMLP(8, 16, 3, fc.ReferenceSTE.apply)
    args = (torch.from_numpy(fc.inputs()[0]),)
    plain = fc.export_plain(_with_weights(fc.QATMLP(8, 16, 3, fc.forward_only), reference), args)
    if how == "pass":
        model = plain
        for first, last in _fake_quant_chains(plain):
            model, report = straight_through(model, first, last)
            assert report.construct is not None
    else:
        module = _with_weights(fc.QATMLP(8, 16, 3, st_helper), reference)
        model = fc.export_with_constructs(module, args, tmp_path / "qat.onnx", dynamo=how == "dynamo")
    constructs = list_stop_gradients(model).constructs
    assert {"fc1.weight", "fc2.weight"} <= {c.input for c in constructs} or how == "dynamo"
    assert [c.kind for c in constructs] == ["straight_through"] * 3
    _assert_bit_identical(model, plain)
    _assert_trains_like(reference, model, fc.label(3), tmp_path, quantized=True)


# -- VQ-VAE: z + stop(e - z) and the commitment loss --------------------------------------------


@pytest.mark.parametrize(
    ("quantizer", "exporter"), [("idiom", "torchscript"), ("idiom", "dynamo"), ("helper", "torchscript")]
)
def test_vqvae_gradients_match_pytorch(quantizer, exporter, tmp_path):
    torch.manual_seed(3)
    reference = fc.VQVAE(fc.vq_idiom, fc.detach)
    quantize = fc.vq_idiom if quantizer == "idiom" else st_helper
    module = _with_weights(fc.VQVAE(quantize, fc.detach), reference)
    args = (torch.from_numpy(fc.inputs()[0]),)
    model = fc.export_with_constructs(module, args, tmp_path / "vq.onnx", dynamo=exporter == "dynamo")
    ops = {n.op_type for n in model.graph.node}
    assert "ArgMin" in ops and ops & {"Gather", "GatherND", "GatherElements"}, ops
    report = list_stop_gradients(model)
    assert len(report.constructs) == (1 if quantizer == "helper" else 0)
    label = np.zeros((1,), np.float32)  # mse(L, 0) = L^2: every gradient is 2 L dL
    _assert_trains_like(reference, model, label, tmp_path)
