"""Write a trained inference model: the eval model, pruned, with the checkpoint's weights.

ORT's ``Module.export_model_for_inferencing`` cannot do this for models with stops (it
does not know the StopGradient op). Here the eval model of an artifact directory is
pruned to the model's own outputs (the loss goes), every parameter input becomes an
initializer holding the trained value from the CheckpointState, and the StopGradient
nodes stay (so the model runs with the op library) or go with ``keep_stops=False`` (so
it runs with any ONNX Runtime).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from .._io import atomic_writer, refuse_overwriting, save_model
from ..errors import TensorNotFoundError, TrainingError
from ..graph import inferred_graph, node_reads
from . import _ort
from ._load import artifact_paths

__all__ = ["EXTERNAL_DATA_THRESHOLD", "OUTPUTS_METADATA_KEY", "export_for_inference"]

log = logging.getLogger(__name__)

#: Eval-model metadata written by ``generate_artifacts``: the source model's outputs (JSON list).
OUTPUTS_METADATA_KEY = "onnx_stopgrad.model_outputs"
#: Weights larger than this in total go to external data by default (protobuf stops at 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1 << 30
_SMALL_TENSOR = 1024  # bytes: smaller initializers stay inside the model file


def export_for_inference(
    artifact_directory: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    keep_stops: bool = True,
    state: Any = None,
    output_names: Sequence[str] | None = None,
    external_data: bool | None = None,
    prefix: str = "",
) -> Path:
    """Write the trained model of ``artifact_directory`` to ``output_path`` (atomically).

    The weights come from ``state`` (an ORT ``CheckpointState``, e.g. the one
    :func:`~onnx_stopgrad.training.load` returned, after training) or else from the
    directory's checkpoint. ``output_names`` defaults to the source model's outputs.
    ``keep_stops=False`` removes the StopGradient nodes and the gradient-scale and
    straight-through constructs (inference is unchanged; the model then needs no op
    library). ``external_data`` writes the larger weights to ``<output>.data`` beside the
    model; ``None`` does so only above 1 GiB of weights. Returns the path written.
    """
    paths = artifact_paths(artifact_directory, prefix)
    output_path = Path(output_path)
    refuse_overwriting([output_path, output_path.with_name(f"{output_path.name}.data")], paths.values())
    if state is None:
        state = _load_state(paths["checkpoint"])
    weights = {name: np.asarray(param.data) for name, param in state.parameters}
    model = onnx.load(str(paths["eval"]), load_external_data=False)
    outputs = list(output_names) if output_names else _model_outputs(model, paths["eval"])
    inference = _pruned(model, outputs, weights)
    if not keep_stops:
        from ..passes.remove import remove_in_place

        removed = remove_in_place(inference)
        log.info("removed %d StopGradient node(s)", len(removed.removed))
    _describe_outputs(inference)
    kept = [(p.key, p.value) for p in inference.metadata_props if p.key != OUTPUTS_METADATA_KEY]
    del inference.metadata_props[:]
    for key, value in kept:
        inference.metadata_props.add(key=key, value=value)
    size = sum(len(t.raw_data) for t in inference.graph.initializer)
    if external_data or (external_data is None and size > EXTERNAL_DATA_THRESHOLD):
        _write_external(inference, output_path)
    else:
        save_model(inference, output_path)
    return output_path


def _load_state(checkpoint: Path) -> Any:
    _ort.ort_artifacts()
    from onnxruntime.training.api import CheckpointState

    try:
        return CheckpointState.load_checkpoint(str(checkpoint))
    except Exception as exc:  # ORT raises RuntimeError / Fail
        raise _ort.ort_error(exc, f"read the checkpoint {checkpoint}") from exc


def _model_outputs(model: onnx.ModelProto, eval_path: Path) -> list[str]:
    recorded = {p.key: p.value for p in model.metadata_props}.get(OUTPUTS_METADATA_KEY)
    if recorded is None:
        raise TrainingError(
            f"{eval_path} does not say which outputs the model has (not built by onnx-stopgrad); "
            "pass output_names (CLI: --output-name NAME)"
        )
    return list(json.loads(recorded))


def _pruned(model: onnx.ModelProto, outputs: list[str], weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The nodes ``outputs`` need, parameters as initializers, loss and labels gone."""
    graph = model.graph
    produced = {name for node in graph.node for name in node.output}
    sources = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    unknown = [name for name in outputs if name not in produced and name not in sources]
    if unknown:
        raise TensorNotFoundError(
            f"output {unknown[0]!r} is not a tensor of the eval model; "
            "check output_names (CLI: --output-name)"
        )
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    needed: set[str] = set()
    keep: set[int] = set()
    pending = list(outputs)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        index = producer.get(name)
        if index is not None and index not in keep:
            keep.add(index)
            pending.extend(node_reads(graph.node[index]))
    result = onnx.ModelProto()
    result.CopyFrom(model)
    new = result.graph
    del new.node[:], new.input[:], new.output[:], new.initializer[:], new.value_info[:]
    new.node.extend(graph.node[i] for i in sorted(keep))
    new.initializer.extend(t for t in graph.initializer if t.name in needed)
    for value in graph.input:
        if value.name not in needed:
            continue
        if value.name in weights:
            new.initializer.append(numpy_helper.from_array(weights[value.name], value.name))
        else:
            new.input.append(value)
    described = {v.name: v for v in [*graph.value_info, *graph.output]}
    new.output.extend(
        described.get(name) or onnx.helper.make_empty_tensor_value_info(name) for name in outputs
    )
    new.value_info.extend(v for v in graph.value_info if v.name in needed and v.name not in outputs)
    return result


def _describe_outputs(model: onnx.ModelProto) -> None:
    """Give outputs without a type the one shape inference finds (ORT wants typed outputs)."""
    untyped = [o.name for o in model.graph.output if not o.type.tensor_type.elem_type]
    if not untyped:
        return
    inferred = inferred_graph(model)  # best effort: ORT infers the types itself when loading
    types = {v.name: v for v in [*inferred.value_info, *inferred.output]}
    for output in model.graph.output:
        if output.name in untyped and output.name in types:
            output.CopyFrom(types[output.name])


def _write_external(model: onnx.ModelProto, path: Path) -> None:
    """Weights over 1 KiB to ``<name>.data`` beside ``path``; data first, then the model."""
    location = f"{path.name}.data"
    with atomic_writer(path.parent / location) as handle:
        for tensor in model.graph.initializer:
            if len(tensor.raw_data) < _SMALL_TENSOR:
                continue
            handle.write(b"\0" * (-handle.tell() % 4096))  # page-aligned, like onnx's writer
            offset = handle.tell()
            handle.write(tensor.raw_data)
            external_data_helper.set_external_data(tensor, location, offset, len(tensor.raw_data))
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
    save_model(model, path)
