"""Export PyTorch modules to ONNX with ``Tensor.detach()`` kept as a StopGradient node.

PyTorch's ONNX exporters erase ``detach`` (ONNX is "inference only"), so a model that
blocks gradients in PyTorch loses those blocks on export. :func:`export` wraps
``torch.onnx.export`` and turns every ``detach`` the module's ``forward`` calls into a
StopGradient node of the project's domain:

* TorchScript exporter (``dynamo=False``): ``detach`` becomes an autograd Function whose
  ``symbolic`` emits the node.
* dynamo exporter (``dynamo=True``, non-strict ``torch.export``): ``detach`` becomes the
  custom op ``onnx_stopgrad::stop_gradient``, translated by :func:`translation_table`.

Only calls made by the module's own code while it is traced are converted; PyTorch's
internals and the exporter keep the real ``detach``, which is restored afterwards. The
patching itself lives in :mod:`onnx_stopgrad._torch_detach`.

:func:`gradient_scale` and :func:`straight_through` (see ``_torch_family``) export, with
either exporter, to the constructs ``onnx-stopgrad scale`` / ``straight-through`` build.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

try:
    import torch  # the real torch: absolute import, not this module
except ImportError as _exc:
    raise ImportError(
        f"onnx_stopgrad.torch needs PyTorch ({_exc}): pip install 'onnx-stopgrad[training]' or torch"
    ) from _exc

from . import _io
from ._names import DOMAIN, OP_TYPE, OPSET_VERSION
from ._ort119 import MAX_IR_VERSION, cap_ir_version
from ._reports import ReportFields
from ._torch_detach import DetachLog, keep_detach, translation_table
from ._torch_family import expand_placeholders, gradient_scale, straight_through
from .errors import ExportError, InvalidModelError, ModelSaveError

__all__ = [
    "DetachLog",
    "ExportReport",
    "export",
    "gradient_scale",
    "keep_detach",
    "straight_through",
    "translation_table",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportReport(ReportFields):
    """Result of :func:`export`."""

    path: Path
    #: "torchscript" or "dynamo".
    exporter: str
    #: detach calls turned into stops during tracing (dead ones vanish from the file).
    converted: int
    #: StopGradient nodes in the written model.
    stop_gradients: int
    #: the exporter's IR version when it was lowered to MAX_IR_VERSION, else None.
    lowered_ir_version: int | None


def export(
    module: torch.nn.Module,
    args: tuple[Any, ...] | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    check: bool = True,
    **options: Any,
) -> ExportReport:
    """``torch.onnx.export`` that keeps every live ``detach`` as a StopGradient node.

    ``options`` go to ``torch.onnx.export`` (``dynamo`` defaults to False: the TorchScript
    exporter; ``verbose`` defaults to False). The model gets the op library's opset import
    and an IR version ONNX Runtime 1.19 loads (<= 10); with ``check`` it must pass the full
    ONNX checker. The file is written atomically: on any error nothing is written.
    """
    if isinstance(module, (torch.jit.ScriptModule, torch.jit.ScriptFunction)) or not isinstance(
        module, torch.nn.Module
    ):
        raise ExportError(
            f"export() needs a torch.nn.Module running Python code, got {type(module).__name__};"
            " pass the module before scripting or torch.export"
        )
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ModelSaveError(f"{path}: directory {directory} does not exist; create it first")
    dynamo = bool(options.pop("dynamo", False))
    options = _with_stop_gradient_translation(dynamo, options)
    if isinstance(args, torch.Tensor):
        args = (args,)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=directory))
    except OSError as exc:
        raise ModelSaveError(f"{path}: cannot write here ({exc.strerror}); choose another output") from exc
    try:
        staged = staging / path.name
        with keep_detach(module) as record:
            torch.onnx.export(module, args, str(staged), dynamo=dynamo, **options)
        model, _ = _io.load_model(staged)
        lowered = _finish(model)
        if check:
            _io.save_model(model, staged)
            _check(staged)
        _io.save_model(model, path, source_dir=staging.resolve())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stops = sum((node.domain, node.op_type) == (DOMAIN, OP_TYPE) for node in model.graph.node)
    if record.converted and not stops:
        log.warning("%d detach call(s) converted but none reaches the outputs", record.converted)
    log.info("exported %s: %d StopGradient node(s)", path, stops)
    exporter = "dynamo" if dynamo else "torchscript"
    return ExportReport(path, exporter, record.converted, stops, lowered)


def _with_stop_gradient_translation(dynamo: bool, options: dict[str, Any]) -> dict[str, Any]:
    """The user's export options plus what each exporter needs to emit StopGradient."""
    options = dict(options)
    options.setdefault("verbose", False)  # the dynamo exporter prints its progress otherwise
    if dynamo:
        table = dict(options.pop("custom_translation_table", None) or {})
        table.update(translation_table())
        options["custom_translation_table"] = table
    else:
        custom_opsets = dict(options.pop("custom_opsets", None) or {})
        custom_opsets[DOMAIN] = OPSET_VERSION
        options["custom_opsets"] = custom_opsets
    return options


def _finish(model: onnx.ModelProto) -> int | None:
    """Expand gradient constructs; ensure the op library's opset import and an IR version ORT 1.19 loads."""
    expand_placeholders(model)
    imports = {entry.domain: entry for entry in model.opset_import}
    if DOMAIN in imports:
        imports[DOMAIN].version = OPSET_VERSION
    else:
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))
    lowered = cap_ir_version(model)
    if lowered is not None:
        log.info("lowered IR version %d to %d for ONNX Runtime 1.19", lowered, MAX_IR_VERSION)
    return lowered


def _check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True, check_custom_domain=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelError(
            f"exported model fails the ONNX checker ({first}); report this with the module"
        ) from exc
