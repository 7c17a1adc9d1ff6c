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
internals and the exporter keep the real ``detach``, which is restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import onnx
import torch  # the real torch: absolute import, not this module

from . import _io
from ._names import DOMAIN, OP_TYPE, OPSET_VERSION, QUALIFIED_OP
from ._ort119 import MAX_IR_VERSION, cap_ir_version
from ._reports import ReportFields
from .errors import ExportError, InvalidModelError, ModelSaveError

__all__ = ["export", "keep_detach", "translation_table", "DetachLog", "ExportReport"]

log = logging.getLogger(__name__)


_TORCH_OP_NAME = f"{DOMAIN}::stop_gradient"
_ORIGINAL_DETACH = torch.Tensor.detach
_ORIGINAL_DETACH_ = torch.Tensor.detach_
_ORIGINAL_TORCH_DETACH = torch.detach


@dataclasses.dataclass
class DetachLog:
    """What the patched ``detach`` did while :func:`keep_detach` was active."""

    #: ``detach``/``detach_`` calls turned into stops while tracing.
    converted: int = 0
    #: calls left to PyTorch (not tracing, outside the module, internal, or not float).
    passed_through: int = 0
    _scope_depth: int = 0
    _scoped: bool = False


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


class _StopGradientFunction(torch.autograd.Function):
    """``detach`` for the TorchScript tracer: same values, no gradient, a symbolic."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _ORIGINAL_DETACH(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> None:  # type: ignore[override]
        return None

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:
        return g.op(QUALIFIED_OP, x).setType(x.type())


@functools.cache
def _stop_gradient_op() -> Callable[[torch.Tensor], torch.Tensor]:
    """Define the torch custom op ``onnx_stopgrad::stop_gradient`` once per process."""

    @torch.library.custom_op(_TORCH_OP_NAME, mutates_args=())
    def stop_gradient(x: torch.Tensor) -> torch.Tensor:
        return x.clone()  # a custom op may not return an alias of its input

    @stop_gradient.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    def backward(ctx: Any, grad: torch.Tensor) -> None:
        return None

    stop_gradient.register_autograd(backward)
    return stop_gradient


def translation_table() -> dict[Callable[..., Any], Callable[..., Any]]:
    """``custom_translation_table`` entry for ``torch.onnx.export(..., dynamo=True)``."""
    try:
        from onnxscript import values  # the dynamo exporter needs it anyway
    except ImportError as exc:
        raise ExportError(
            "the dynamo exporter needs onnxscript; `pip install onnxscript` or use dynamo=False"
        ) from exc

    _stop_gradient_op()
    opset = values.Opset(DOMAIN, OPSET_VERSION)

    def stop_gradient(x: Any) -> Any:
        return getattr(opset, OP_TYPE)(x)

    return {torch.ops.onnx_stopgrad.stop_gradient.default: stop_gradient}


_lock = threading.RLock()
_active: DetachLog | None = None


def _is_torch_internal(frame: FrameType | None) -> bool:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name == "torch" or name.startswith("torch.")


def _should_stop(x: torch.Tensor, caller: FrameType | None) -> bool:
    record = _active
    if record is None:
        return False
    tracing = torch._C._get_tracing_state() is not None or torch.compiler.is_exporting()
    wanted = (
        tracing
        and (not record._scoped or record._scope_depth > 0)
        and x.is_floating_point()
        and not _is_torch_internal(caller)
    )
    if wanted:
        record.converted += 1
    else:
        record.passed_through += 1
    return wanted


def _stop(x: torch.Tensor) -> torch.Tensor:
    if torch._C._get_tracing_state() is not None:
        return _StopGradientFunction.apply(x)
    return _stop_gradient_op()(x)


def _detach(self: torch.Tensor) -> torch.Tensor:
    if _should_stop(self, sys._getframe(1)):
        return _stop(self)
    return _ORIGINAL_DETACH(self)


def _torch_detach(x: torch.Tensor) -> torch.Tensor:
    if _should_stop(x, sys._getframe(1)):
        return _stop(x)
    return _ORIGINAL_TORCH_DETACH(x)


def _detach_(self: torch.Tensor) -> torch.Tensor:
    if not _should_stop(self, sys._getframe(1)):
        return _ORIGINAL_DETACH_(self)
    state = torch._C._get_tracing_state()
    if state is not None:
        stopped = _StopGradientFunction.apply(self)
        torch._C._set_tracing_state(None)
        try:
            _ORIGINAL_DETACH_(self)
        finally:
            torch._C._set_tracing_state(state)
        torch._C._set_value_trace(self, torch._C._get_value_trace(stopped))
        return self
    _ORIGINAL_DETACH_(self)
    with torch.no_grad():
        self.copy_(_stop_gradient_op()(self))
    return self


def _patch() -> None:
    torch.Tensor.detach = _detach  # type: ignore[method-assign]
    torch.Tensor.detach_ = _detach_  # type: ignore[method-assign]
    torch.detach = _torch_detach


def _unpatch() -> None:
    torch.Tensor.detach = _ORIGINAL_DETACH  # type: ignore[method-assign]
    torch.Tensor.detach_ = _ORIGINAL_DETACH_  # type: ignore[method-assign]
    torch.detach = _ORIGINAL_TORCH_DETACH


@contextlib.contextmanager
def _scoped_to(module: torch.nn.Module, record: DetachLog) -> Iterator[None]:
    """Convert only while ``module`` runs (its forward, and what it calls)."""

    def enter(*_: Any) -> None:
        record._scope_depth += 1

    def leave(*_: Any) -> None:
        record._scope_depth -= 1

    record._scoped = True
    handles = [
        module.register_forward_pre_hook(enter),
        module.register_forward_hook(leave, always_call=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        record._scoped = False


@contextlib.contextmanager
def _non_strict_capture_only() -> Iterator[None]:
    """Keep the dynamo exporter from retrying in strict mode, where ``detach`` is not ours.

    Strict ``torch.export`` traces bytecode with TorchDynamo, which records ``aten.detach``
    without calling the patched method; the stop would silently vanish. Without a retry a
    module that non-strict export cannot capture fails with torch's error instead.
    """
    try:
        from torch.onnx._internal.exporter import _capture_strategies as strategies

        saved = strategies.CAPTURE_STRATEGIES
        non_strict = strategies.TorchExportNonStrictStrategy
    except (ImportError, AttributeError):  # another torch layout: nothing to narrow
        log.warning("cannot restrict torch.onnx's dynamo exporter to non-strict capture")
        yield
        return
    strategies.CAPTURE_STRATEGIES = (non_strict,)
    try:
        yield
    finally:
        strategies.CAPTURE_STRATEGIES = saved


@contextlib.contextmanager
def keep_detach(module: torch.nn.Module | None = None) -> Iterator[DetachLog]:
    """Within this block, ``detach`` calls traced by an ONNX export become StopGradient.

    With ``module``, only calls made while that module runs are converted. Eager code is
    unaffected (``detach`` behaves as usual when nothing is traced). PyTorch's own
    ``detach`` is restored on exit, also after an error. Use :func:`translation_table`
    as ``custom_translation_table`` when exporting with ``dynamo=True``; the dynamo
    exporter then captures non-strictly only (strict capture would drop the stops).
    """
    global _active
    with _lock:
        if _active is not None:
            raise ExportError("keep_detach() is already active; do not nest exports")
        record = DetachLog()
        _active = record
        _patch()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(_non_strict_capture_only())
                if module is not None:
                    stack.enter_context(_scoped_to(module, record))
                yield record
        finally:
            _unpatch()
            _active = None


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
    exporter; ``verbose`` defaults to False). The model gets the op library's opset import and an IR version ONNX
    Runtime 1.19 loads (<= 10); with ``check`` it must pass the full ONNX checker. The
    file is written atomically: on any error nothing is written.
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
        raise ModelSaveError(
            f"{path}: cannot write here ({exc.strerror}); choose another output"
        ) from exc
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
    """Ensure the op library's opset import and an IR version ORT 1.19 loads."""
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
