"""Element types and shapes of a model's main-graph tensors, from ONNX shape inference.

Inference runs on the graph package's weight-free copy (weights become typed graph inputs),
so no weight bytes are copied. Symbolic dimensions stay symbolic (``"batch"``); an unknown one is None.
"""

from __future__ import annotations

import logging

import onnx

from ..graph import run_shape_inference, weight_free_copy

__all__ = ["TensorType", "dtype_name", "tensor_types"]

log = logging.getLogger(__name__)

#: ``(element type, dims)``; dims is None when the rank is unknown.
TensorType = tuple[int, "tuple[int | str | None, ...] | None"]


def dtype_name(elem_type: int) -> str:
    """``1`` -> ``"float32"``; ``"?"`` for an undefined type."""
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "?"


def tensor_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Type of every main-graph tensor inference can type; failures leave what the file states."""
    work = _weight_free(model)
    work, reason = run_shape_inference(work, data_prop=True)
    if reason is not None:
        log.warning("shape inference failed (%s); using the shapes stored in the model", reason)
    types: dict[str, TensorType] = {}
    for tensor in model.graph.initializer:
        types[tensor.name] = (tensor.data_type, tuple(int(d) for d in tensor.dims))
    graph = work.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name not in types and value.type.HasField("tensor_type"):
            types[value.name] = _type_of(value.type.tensor_type)
    return types


def _type_of(tensor_type: onnx.TypeProto.Tensor) -> TensorType:
    if not tensor_type.HasField("shape"):
        return tensor_type.elem_type, None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return tensor_type.elem_type, tuple(dims)


def _weight_free(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph package's weight-free copy, without the value infos the file declares."""
    work = weight_free_copy(model)
    del work.graph.value_info[:]
    return work
