"""onnx_stopgrad.torch.export: stops where PyTorch detaches, values equal to PyTorch's."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from torch_export_cases import CASES, EXPORTERS, Case, build, needs_onnxscript

from onnx_stopgrad import torch as sg_torch
from onnx_stopgrad._io import external_data_files
from onnx_stopgrad._names import DOMAIN, OP_TYPE, OPSET_VERSION
from onnx_stopgrad.errors import ModelSaveError, StopGradError

ORIGINALS = (torch.Tensor.detach, torch.Tensor.detach_, torch.detach)


class StopGradientIdentity(OpRun):
    """onnx.reference kernel: forward values pass through unchanged."""

    op_domain = DOMAIN

    def _run(self, x):  # type: ignore[override]
        return (x,)


StopGradientIdentity.__name__ = OP_TYPE


def stop_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)]


def producers_of_stops(model: onnx.ModelProto) -> list[str]:
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    return sorted(producer.get(node.input[0], "<graph input>") for node in stop_nodes(model))


def torch_outputs(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*inputs)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def feeds(model: onnx.ModelProto, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    names = [i.name for i in model.graph.input]
    return dict(zip(names, (t.numpy() for t in inputs), strict=True))


def export_case(case: Case, exporter: str, tmp_path: Path):
    module, inputs = build(case)
    report = sg_torch.export(
        module, inputs, tmp_path / f"{case.name}.onnx", dynamo=exporter == "dynamo", verbose=False
    )
    return module, inputs, report, onnx.load(str(report.path))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_export_keeps_each_detach_as_stop(case: Case, exporter: str, tmp_path: Path) -> None:
    module, inputs, report, model = export_case(case, exporter, tmp_path)
    assert report.exporter == exporter
    assert producers_of_stops(model) == sorted(case.stopped_producers)
    assert report.stop_gradients == len(case.stopped_producers)
    assert report.converted == len(case.stopped_producers)
    assert any(o.domain == DOMAIN and o.version == OPSET_VERSION for o in model.opset_import)
    assert model.ir_version <= sg_torch.MAX_IR_VERSION
    onnx.checker.check_model(model, full_check=True, check_custom_domain=True)
    assert (torch.Tensor.detach, torch.Tensor.detach_, torch.detach) == ORIGINALS
    weights = external_data_files(onnx.load(str(report.path), load_external_data=False))
    assert sorted(os.listdir(tmp_path)) == sorted([report.path.name, *weights])  # no temp files

    got = ReferenceEvaluator(model, new_ops=[StopGradientIdentity]).run(None, feeds(model, inputs))
    for ours, theirs in zip(got, torch_outputs(module, inputs), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def _library_session_options():
    import onnx_stopgrad
    from onnx_stopgrad.errors import LibraryError

    try:
        return onnx_stopgrad.session_options()
    except (ModuleNotFoundError, LibraryError) as exc:  # op library not built here
        pytest.skip(f"op library unavailable: {exc}")


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_export_runs_in_onnxruntime_with_library(case: Case, exporter: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    options = _library_session_options()
    module, inputs, report, model = export_case(case, exporter, tmp_path)
    session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds(model, inputs))
    for ours, theirs in zip(got, torch_outputs(module, inputs), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_plain_torch_export_erases_detach(tmp_path: Path) -> None:
    module, inputs = build(CASES[0])
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(module, inputs, str(plain), dynamo=False, verbose=False)
    assert stop_nodes(onnx.load(str(plain))) == []
    report = sg_torch.export(module, inputs, tmp_path / "kept.onnx")
    assert len(stop_nodes(onnx.load(str(report.path)))) == 1


class _Tricky(torch.nn.Module):
    """A dead detach, detach_, torch.detach and an integer detach, side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x))
        _unused = h.detach() * 2
        g = torch.tanh(self.a(x))
        g.detach_()
        count = (x > 0).sum(dim=1).detach()
        return self.b(h) + self.b(torch.detach(g)), count


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_dead_inplace_functional_and_integer_detach(exporter: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module, x = _Tricky(), torch.randn(3, 4)
    report = sg_torch.export(module, (x,), tmp_path / "m.onnx", dynamo=exporter == "dynamo")
    model = onnx.load(str(report.path))
    # detach_ on g and torch.detach(g) stay (chained); the dead one and the int one vanish.
    assert report.converted == 3
    assert producers_of_stops(model) == [OP_TYPE, "Tanh"]
    onnx.checker.check_model(model, full_check=True, check_custom_domain=True)
    got = ReferenceEvaluator(model, new_ops=[StopGradientIdentity]).run(None, feeds(model, (x,)))
    for ours, theirs in zip(got, torch_outputs(module, (x,)), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


class _Failing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.detach()
        raise ValueError("boom")


def test_detach_restored_and_nothing_written_after_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boom"):
        sg_torch.export(_Failing(), (torch.randn(2),), tmp_path / "m.onnx")
    assert (torch.Tensor.detach, torch.Tensor.detach_, torch.detach) == ORIGINALS
    assert os.listdir(tmp_path) == []


def test_eager_code_inside_keep_detach_is_unchanged() -> None:
    module, inputs = build(CASES[0])
    with sg_torch.keep_detach(module) as record:
        module(*inputs).backward()
    assert record.converted == 0 and record.passed_through == 1
    assert module.backbone[0][0].weight.grad is None
    assert module.head.weight.grad is not None
    assert torch.Tensor.detach is ORIGINALS[0]


@needs_onnxscript
def test_keep_detach_with_plain_dynamo_export(tmp_path: Path) -> None:
    module, inputs = build(CASES[0])
    with sg_torch.keep_detach() as record:
        program = torch.onnx.export(
            module,
            inputs,
            dynamo=True,
            verbose=False,
            custom_translation_table=sg_torch.translation_table(),
        )
    assert record.converted == 1
    assert producers_of_stops(program.model_proto) == ["Relu"]


def test_keep_detach_refuses_nesting() -> None:
    with sg_torch.keep_detach():
        with pytest.raises(StopGradError, match="already active"):
            with sg_torch.keep_detach():
                pass
    assert torch.Tensor.detach is ORIGINALS[0]


def test_scripted_module_and_missing_directory_are_user_errors(tmp_path: Path) -> None:
    module, inputs = build(CASES[0])
    with pytest.raises(StopGradError, match=r"nn\.Module"):
        scripted = torch.jit.script(torch.nn.Linear(2, 2))
        sg_torch.export(scripted, (torch.randn(1, 2),), tmp_path / "a.onnx")
    with pytest.raises(ModelSaveError, match="does not exist"):
        sg_torch.export(module, inputs, tmp_path / "missing" / "a.onnx")


def test_ir_version_above_ort_119_is_lowered(caplog: pytest.LogCaptureFixture) -> None:
    model = onnx.helper.make_model(
        onnx.helper.make_graph([], "g", [], []), opset_imports=[onnx.helper.make_opsetid("", 17)]
    )
    model.ir_version = 13
    with caplog.at_level(logging.INFO, logger="onnx_stopgrad.torch"):
        assert sg_torch._finish(model) == 13
    assert model.ir_version == sg_torch.MAX_IR_VERSION
    assert (DOMAIN, OPSET_VERSION) in {(o.domain, o.version) for o in model.opset_import}
    assert "lowered IR version 13" in caplog.text


def test_module_imports_the_real_torch() -> None:
    """``import torch`` inside onnx_stopgrad/torch.py is PyTorch, not the module itself."""
    import sys

    assert sg_torch.torch is sys.modules["torch"]
    assert sg_torch.torch.__name__ == "torch" and hasattr(sg_torch.torch, "nn")
    assert sg_torch.__name__ == "onnx_stopgrad.torch"


@needs_onnxscript
def test_dynamo_exporter_captures_non_strictly_only_while_active() -> None:
    """Strict capture (TorchDynamo) records aten.detach without calling our method."""
    from torch.onnx._internal.exporter import _capture_strategies as strategies

    before = strategies.CAPTURE_STRATEGIES
    assert strategies.TorchExportStrictStrategy in before
    module, inputs = build(CASES[0])
    with sg_torch.keep_detach(module) as record:
        assert strategies.CAPTURE_STRATEGIES == (strategies.TorchExportNonStrictStrategy,)
        strict = torch.export.export(module, inputs, strict=True)
    assert strategies.CAPTURE_STRATEGIES == before
    targets = {str(n.target) for n in strict.graph.nodes if n.op == "call_function"}
    assert record.converted == 0 and "aten.detach.default" in targets  # why strict is refused
