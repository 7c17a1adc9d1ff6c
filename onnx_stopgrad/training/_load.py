"""Open a directory of training artifacts with the op library registered."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import TrainingError
from . import _ort

__all__ = ["artifact_paths", "load"]


def artifact_paths(artifact_directory: str | os.PathLike[str], prefix: str = "") -> dict[str, Path]:
    """The files ORT's training API reads; a TrainingError names the first one missing."""
    directory = Path(artifact_directory)
    if not directory.is_dir():
        raise TrainingError(f"{directory}: no such directory; create it with `onnx-stopgrad artifacts`")
    paths = {
        "checkpoint": directory / f"{prefix}checkpoint",
        "training": directory / f"{prefix}training_model.onnx",
        "eval": directory / f"{prefix}eval_model.onnx",
        "optimizer": directory / f"{prefix}optimizer_model.onnx",
    }
    for kind in ("checkpoint", "training", "eval"):
        if not paths[kind].exists():
            raise TrainingError(
                f"{directory}: {paths[kind].name} is missing; rebuild with `onnx-stopgrad artifacts`"
            )
    return paths


def load(
    artifact_directory: str | os.PathLike[str],
    device: str = "cpu",
    prefix: str = "",
    options: Any = None,
) -> tuple[Any, Any, Any]:
    """Return ORT's ``(CheckpointState, Module, Optimizer)``; Optimizer is None without one.

    The StopGradient library is registered with the sessions (added to ``options``, an
    ``onnxruntime.SessionOptions``, when given), so models with stops run. When a
    BatchNormalization trains in training mode, ``module(...)`` returns the loss followed
    by the updated running statistics: pass them to ``RunningStatistics.update`` after
    each step (``fit`` does). ONNX Runtime's warnings are left out unless the
    ``onnx_stopgrad`` logger is enabled for INFO (or ``options`` sets
    ``log_severity_level`` itself).
    """
    _ort.ort_artifacts()
    from onnxruntime.training import api

    from .._library import session_options

    paths = artifact_paths(artifact_directory, prefix)
    options = session_options(options)
    if options.log_severity_level < 0:  # not chosen by the caller
        options.log_severity_level = _ort.session_log_severity()
    try:
        state = api.CheckpointState.load_checkpoint(str(paths["checkpoint"]))
        module = api.Module(
            str(paths["training"]), state, str(paths["eval"]), device=device, session_options=options
        )
        optimizer = api.Optimizer(str(paths["optimizer"]), module) if paths["optimizer"].exists() else None
    except Exception as exc:  # ORT raises RuntimeError / Fail / InvalidArgument
        raise _ort.ort_error(exc, f"load the artifacts in {artifact_directory}") from exc
    return state, module, optimizer
