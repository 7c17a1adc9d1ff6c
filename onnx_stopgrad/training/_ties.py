"""Find tied weights an exporter split in two: they would train apart, unlike in PyTorch.

A tied LM head (GPT-2's ``lm_head`` reading the embedding ``wte``) exported by torch's
TorchScript exporter with constant folding (its default) becomes two initializers: the
embedding and a transposed copy (``onnx::MatMul_N``). ONNX Runtime then trains each with
its own part of the gradient, so the model drifts away from the PyTorch one. The copy is
recognisable: it holds the other tensor's values, transposed or not, bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import FLOAT_TYPES

__all__ = ["split_ties", "warn_split_ties"]

log = logging.getLogger(__name__)


def split_ties(model: onnx.ModelProto, trainable: Collection[str]) -> list[tuple[str, str, bool]]:
    """``(trainable, other, transposed)`` for each trainable 2-D weight whose values another
    float initializer holds (transposed or as is), once per pair. Tensors holding a single
    value throughout (zeros, ones) are skipped."""
    matrices = {t.name: t for t in model.graph.initializer if t.data_type in FLOAT_TYPES and len(t.dims) == 2}
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, tensor in matrices.items():
        by_shape.setdefault(tuple(tensor.dims), []).append(name)
    ranges: dict[str, tuple[float, float]] = {}  # min and max: equal for a tensor and its transpose

    def value_range(name: str) -> tuple[float, float]:
        if name not in ranges:
            values = numpy_helper.to_array(matrices[name])
            ranges[name] = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        return ranges[name]

    found: list[tuple[str, str, bool]] = []
    paired: set[frozenset[str]] = set()
    for name in dict.fromkeys(trainable):
        tensor = matrices.get(name)
        if tensor is None:
            continue
        rows, cols = tensor.dims
        candidates = [(o, True) for o in by_shape.get((cols, rows), []) if o != name]
        candidates += [(o, False) for o in by_shape.get((rows, cols), []) if o != name and rows != cols]
        if not candidates:
            continue
        low, high = value_range(name)
        if low == high:
            continue
        values = None
        for other, transposed in candidates:
            if frozenset((name, other)) in paired or value_range(other) != (low, high):
                continue
            values = numpy_helper.to_array(tensor) if values is None else values
            for flip in (True, False) if rows == cols else (transposed,):
                if np.array_equal(numpy_helper.to_array(matrices[other]), values.T if flip else values):
                    found.append((name, other, flip))
                    paired.add(frozenset((name, other)))
                    break
    return found


def warn_split_ties(model: onnx.ModelProto, trainable: Collection[str]) -> None:
    """Log a warning for each :func:`split_ties` pair."""
    for name, other, transposed in split_ties(model, trainable):
        how = "the transpose of" if transposed else "the values of"
        log.warning(
            "%s trains, but holds %s %s: probably one tied weight the exporter split in two, which "
            "will now train apart; export with do_constant_folding=False (TorchScript) or "
            "optimize=False (dynamo) to keep it one tensor",
            name,
            how,
            other,
        )
