"""Loss and optimizer names accepted next to ORT's enums and onnxblock blocks."""

from __future__ import annotations

from typing import Any

from ..errors import TrainingError

__all__ = ["LOSSES", "OPTIMIZERS", "loss_type", "optimizer_type"]

#: CLI name -> ``onnxruntime.training.artifacts.LossType`` member name.
LOSSES = {"mse": "MSELoss", "crossentropy": "CrossEntropyLoss", "bce": "BCEWithLogitsLoss", "l1": "L1Loss"}
#: CLI name -> ``onnxruntime.training.artifacts.OptimType`` member name.
OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}


def loss_type(loss: Any) -> Any:
    """``"mse"`` -> ``LossType.MSELoss``; enums, blocks and None pass through."""
    return _lookup(loss, LOSSES, "LossType", "loss")


def optimizer_type(optimizer: Any) -> Any:
    """``"adamw"`` -> ``OptimType.AdamW``; enums, blocks and None pass through."""
    return _lookup(optimizer, OPTIMIZERS, "OptimType", "optimizer")


def _lookup(value: Any, names: dict[str, str], enum_name: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    from onnxruntime.training import artifacts

    key = value.lower()
    if key not in names:
        raise TrainingError(f"unknown {what} {value!r}; choose one of {', '.join(names)}")
    return getattr(getattr(artifacts, enum_name), names[key])
