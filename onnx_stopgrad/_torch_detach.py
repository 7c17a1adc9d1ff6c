"""``detach`` kept through ONNX export: the patching behind :func:`onnx_stopgrad.torch.keep_detach`.

While :func:`keep_detach` is active, ``Tensor.detach``/``detach_`` and ``torch.detach``
called by the module's own code while it is traced become a StopGradient: an autograd
Function with a ``symbolic`` for the TorchScript exporter, the custom op
``onnx_stopgrad::stop_gradient`` (translated by :func:`translation_table`) for dynamo.
PyTorch's internals and eager code keep the real ``detach``, which is restored on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import torch

from ._names import DOMAIN, OP_TYPE, OPSET_VERSION, QUALIFIED_OP
from ._torch_family import translations
from .errors import ExportError

__all__ = ["DetachLog", "keep_detach", "translation_table"]

#: torch's tracer internals (untyped in torch's stubs), used to keep the trace consistent.
_TRACER: Any = torch._C

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

    return {torch.ops.onnx_stopgrad.stop_gradient.default: stop_gradient, **translations(opset)}


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
        _TRACER._set_tracing_state(None)
        try:
            _ORIGINAL_DETACH_(self)
        finally:
            _TRACER._set_tracing_state(state)
        _TRACER._set_value_trace(self, _TRACER._get_value_trace(stopped))
        return self
    _ORIGINAL_DETACH_(self)
    with torch.no_grad():
        self.copy_(_stop_gradient_op()(self))
    return self


def _patch() -> None:
    _set(_detach, _detach_, _torch_detach)


def _unpatch() -> None:
    _set(_ORIGINAL_DETACH, _ORIGINAL_DETACH_, _ORIGINAL_TORCH_DETACH)


def _set(detach: Any, detach_: Any, torch_detach: Any) -> None:
    """Install the three ``detach`` entry points (typed Any: torch's stubs fix their types)."""
    tensor: Any = torch.Tensor
    tensor.detach, tensor.detach_ = detach, detach_
    module: Any = torch
    module.detach = torch_detach


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
