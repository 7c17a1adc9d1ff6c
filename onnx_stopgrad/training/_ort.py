"""The one place that calls ONNX Runtime's training tools (imported lazily: they import torch)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import onnx

from .._ort119 import readable_ort_message
from ..errors import TrainingError

__all__ = [
    "ort_artifacts",
    "ort_error",
    "quiet_ort",
    "refuse_undifferentiable",
    "session_log_severity",
    "unreachable_param",
]

log = logging.getLogger(__name__)

_NO_GRADIENT = re.compile(r"gradient builder has not been registered: (\S+) for node (\S+)")
_UNREACHABLE = re.compile(r"Cannot compute the partial derivative for '([^']+)'")


def ort_artifacts() -> Any:
    """``onnxruntime.training.artifacts``, or a TrainingError saying how to install it."""
    try:
        from onnxruntime.training import artifacts
    except ImportError as exc:
        if sys.version_info >= (3, 13):
            python = f"{sys.version_info[0]}.{sys.version_info[1]}"
            raise TrainingError(
                f"ONNX Runtime training is not available for Python {python} "
                "(onnxruntime-training 1.19.2, the last release, has wheels for Python 3.10-3.12): "
                "use Python 3.10-3.12 with pip install 'onnx-stopgrad[training]'"
            ) from exc
        raise TrainingError(
            f"ONNX Runtime training is not installed ({exc}); "
            "pip install 'onnx-stopgrad[training]' (onnxruntime-training-cpu 1.19.2 and torch)"
        ) from exc
    return artifacts


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """Keep ORT's per-transformer INFO lines (written to fd 2 by C++) off the terminal.

    ORT 1.19's gradient-graph tools log every graph transformer regardless of the default
    logger severity; what they write is passed to this module's logger at DEBUG level.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if text.strip():
                log.debug("onnxruntime wrote:\n%s", text)


def session_log_severity() -> int:
    """ORT's log level for the sessions this package opens: its warnings (such as
    "Removing initializer ... not used by any node") only when this package's logger is
    enabled for INFO (the CLI's ``-v``, or ``logging`` configured so); else errors only."""
    return 2 if logging.getLogger("onnx_stopgrad").isEnabledFor(logging.INFO) else 3


def unreachable_param(exc: BaseException) -> str | None:
    """The parameter named by ORT's "unreachable from the output" error, if that is the error."""
    match = _UNREACHABLE.search(str(exc))
    return match.group(1) if match else None


def ort_error(exc: BaseException, action: str) -> TrainingError:
    """A one-line TrainingError for an exception ONNX Runtime raised during ``action``."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    missing = _NO_GRADIENT.search(text)
    if missing:
        return TrainingError(
            f"ONNX Runtime 1.19 has no gradient for {missing.group(1)} (node {missing.group(2)}); "
            "freeze the parameters before it (--frozen) or put a StopGradient after it"
        )
    text = readable_ort_message(exc)
    return TrainingError(f"ONNX Runtime could not {action}: {text}")


def refuse_undifferentiable(
    model: onnx.ModelProto, trainable: Sequence[str], targets: Sequence[str], custom_op_library: Any
) -> None:
    """Raise a one-line TrainingError for a model ORT's gradient builder would fail on, or
    abort the process for (an If on the gradient path): judged on the graph ORT's own
    optimizer makes, as ``generate_artifacts`` does, so an If it folds away is no obstacle."""
    from onnxruntime import SessionOptions
    from onnxruntime.capi._pybind_state import get_optimized_model

    from ..graph import element_types, nodes_ort_cannot_differentiate

    options = SessionOptions()
    options.log_severity_level = 3
    if custom_op_library is not None:
        options.register_custom_ops_library(str(custom_op_library))
    try:
        with quiet_ort():
            data = get_optimized_model(model.SerializeToString(), set(trainable), options)
    except Exception as exc:  # ORT raises RuntimeError, Fail, ...
        raise ort_error(exc, "optimize the model") from exc
    optimized = onnx.load_from_string(data)
    nodes = nodes_ort_cannot_differentiate(optimized.graph, trainable, targets, element_types(optimized))
    if nodes:
        raise TrainingError(
            f"ONNX Runtime 1.19 cannot differentiate node {nodes[0]}; put StopGradient nodes around it "
            "(at its output, and at its inputs that parameters reach) or freeze those parameters"
        )
