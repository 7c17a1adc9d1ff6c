"""A plain training loop over ``.npz`` data, for ``onnx-stopgrad train``.

The ``.npz`` file holds one array per input of the training model, under the input's
name (e.g. ``x`` and ``labels``/``target``: the loss's own input), with examples along
axis 0; :func:`training_inputs` lists the names, dtypes and shapes the loaded artifacts
take. :func:`fit` shuffles the examples each epoch, uses the model's fixed batch size
(then dropping a last, smaller batch) or 32, and replaces the checkpoint atomically
with the trained parameters (without the optimizer's state).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import TrainingError
from ._load import artifact_paths, load
from ._losses import check_label_values, label_classes
from ._running import RunningStatistics

__all__ = ["InputSpec", "batches", "fit", "read_npz", "training_inputs"]


@dataclass(frozen=True)
class InputSpec:
    """One input the training model needs per step (parameters and buffers excluded)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    @property
    def fixed_batch(self) -> int | None:
        """The first dimension when the model fixes it."""
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None


def training_inputs(module: Any, eval_model_path: str | os.PathLike[str]) -> list[InputSpec]:
    """Names, dtypes and shapes of what one training step of ``module`` takes."""
    graph = onnx.load(str(eval_model_path), load_external_data=False).graph
    declared = {v.name: v.type.tensor_type for v in graph.input}
    specs = []
    for name in module.input_names():
        tensor = declared.get(name)
        if tensor is None:  # an input the loss added only to the training graph
            specs.append(InputSpec(name, np.dtype(np.float32), ()))
            continue
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
        )
        specs.append(InputSpec(name, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type), dims))
    return specs


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, by name (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no such file; check the path")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(
            f"{path}: not a readable .npz file ({reason}); write it with numpy.savez"
        ) from exc


def _check_data(data: Mapping[str, np.ndarray], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """The arrays named after ``specs``, cast to their dtypes, with one example count."""
    wanted = [s.name for s in specs]
    missing = [name for name in wanted if name not in data]
    if missing:
        raise TrainingError(
            f"no array named {', '.join(missing)}; the data needs one array per model input: "
            f"{', '.join(wanted)} (it has {', '.join(data) or 'none'})"
        )
    arrays = {s.name: np.ascontiguousarray(data[s.name], dtype=s.dtype) for s in specs}
    counts = {name: len(array) if array.ndim else 0 for name, array in arrays.items()}
    if len(set(counts.values())) != 1 or not next(iter(counts.values()), 0):
        raise TrainingError(f"arrays must hold the same number (> 0) of examples along axis 0, got {counts}")
    return arrays


def batches(
    data: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator, drop_last: bool
) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled mini-batches; the last, smaller one is dropped when ``drop_last``."""
    count = len(next(iter(data.values())))
    order = rng.permutation(count)
    stop = count - count % batch_size if drop_last else count
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield {name: array[index] for name, array in data.items()}


def fit(
    artifact_directory: str | os.PathLike[str],
    data: Mapping[str, np.ndarray],
    epochs: int = 1,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    on_batch: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> list[float]:
    """Train for ``epochs``, then replace the checkpoint (parameters only, atomically);
    return each epoch's mean loss.

    ``on_batch(epoch, loss)`` is called after every optimizer step, ``on_epoch(epoch, mean
    loss)`` after every epoch (epochs count from 0), ``on_start(total steps)`` once.
    """
    state, module, optimizer = load(artifact_directory)
    if optimizer is None:
        raise TrainingError(f"{artifact_directory}: no optimizer_model.onnx; rebuild with --optimizer")
    eval_path = artifact_paths(artifact_directory)["eval"]
    specs = training_inputs(module, eval_path)
    data = _check_data(data, specs)
    check_label_values(data, label_classes(onnx.load(str(eval_path), load_external_data=False)))
    fixed = {s.fixed_batch for s in specs if s.fixed_batch is not None}
    if batch_size is None:
        batch_size = fixed.pop() if len(fixed) == 1 else 32
    elif fixed and fixed != {batch_size}:
        raise TrainingError(
            f"the model was exported for batches of {min(fixed)}; pass --batch-size {min(fixed)} "
            "or re-export it with a dynamic batch dimension"
        )
    count = len(next(iter(data.values())))
    if fixed and count < batch_size:
        raise TrainingError(f"the data has {count} examples, fewer than one batch of {batch_size}")
    if learning_rate is not None:
        optimizer.set_learning_rate(learning_rate)
    names = [s.name for s in specs]
    if on_start is not None:
        on_start(epochs * (count // batch_size if fixed else -(-count // batch_size)))
    rng = np.random.default_rng(seed)
    running = RunningStatistics.of(artifact_directory)
    module.train()
    history = []
    for epoch in range(epochs):
        losses = []
        for batch in batches(data, batch_size, rng, drop_last=bool(fixed)):
            outputs = module(*[batch[name] for name in names])
            loss = float(np.asarray(outputs[0] if isinstance(outputs, (tuple, list)) else outputs))
            running.update(state, module, outputs)
            optimizer.step()
            module.lazy_reset_grad()
            losses.append(loss)
            if on_batch is not None:
                on_batch(epoch, loss)
        history.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    _save_checkpoint(state, artifact_paths(artifact_directory)["checkpoint"])
    return history


def _save_checkpoint(state: object, path: Path) -> None:
    """Save the trained state over the old checkpoint through a temporary file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        state.save_checkpoint(state, tmp, include_optimizer_state=False)  # type: ignore[attr-defined]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
