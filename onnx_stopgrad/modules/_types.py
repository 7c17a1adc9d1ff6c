"""Element types and shapes of a model's main-graph tensors, from ONNX shape inference.

Inference runs on a weight-free copy: float initializers become typed graph inputs, so no
weight bytes are copied. Symbolic dimensions stay symbolic (``"batch"``); an unknown one is None.
"""

from __future__ import annotations

import logging

import onnx

from ..graph import FLOAT_TYPES

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
    try:
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except (
        onnx.shape_inference.InferenceError,
        onnx.checker.ValidationError,
        RuntimeError,
        ValueError,
    ) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
    work = onnx.ModelProto()
    work.ir_version = model.ir_version
    work.opset_import.extend(model.opset_import)
    work.functions.extend(model.functions)
    graph = work.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    declared = {value.name for value in model.graph.input}
    for tensor in model.graph.initializer:
        if tensor.data_type not in FLOAT_TYPES and tensor.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(tensor)  # small integer tensors hold shapes inference reads
        elif tensor.name not in declared:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    return work
