"""Copy the running statistics a training step computed into the checkpoint state.

ONNX Runtime's training API cannot write a graph's result back into a parameter, so the
training model of a BatchNormalization that trains in training mode returns the updated
running mean and variance as extra outputs after the loss (listed in its metadata).
:class:`RunningStatistics` copies them into the ``CheckpointState`` after each step;
:func:`~onnx_stopgrad.training.fit` does so itself. A loop written against ORT's API
directly must call :meth:`RunningStatistics.update` after every training step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ._load import artifact_paths
from ._mode_rewrite import RUNNING_STATS_METADATA_KEY

__all__ = ["RunningStatistics"]


class RunningStatistics:
    """Which training-model outputs update which running-statistic parameters."""

    def __init__(self, updates: dict[str, str]) -> None:
        #: training-model output -> parameter (a running mean or variance) it replaces.
        self.updates = dict(updates)

    @classmethod
    def of(cls, artifact_directory: str | os.PathLike[str], prefix: str = "") -> RunningStatistics:
        """The updates recorded in the training model of ``artifact_directory``."""
        path: Path = artifact_paths(artifact_directory, prefix)["training"]
        model = onnx.load(str(path), load_external_data=False)
        recorded = {p.key: p.value for p in model.metadata_props}.get(RUNNING_STATS_METADATA_KEY)
        return cls(json.loads(recorded) if recorded else {})

    def __bool__(self) -> bool:
        return bool(self.updates)

    def update(self, state: Any, module: Any, outputs: Sequence[Any] | Any) -> None:
        """Write the statistics in ``outputs`` (what ``module(...)`` returned in training
        mode) into ``state.parameters``; the next step and the checkpoint then use them."""
        if not self.updates:
            return
        values = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        for name, value in zip(module.output_names(), values, strict=False):
            param = self.updates.get(name)
            if param is not None:
                state.parameters[param].data = np.asarray(value)
