"""The one place onnx-stopgrad runs ONNX shape inference, on a weight-free copy of the model.

Serialising a 440 MB model for ``onnx.shape_inference`` costs seconds and its size in memory
twice over; inference needs the weights' types and shapes, never their bytes. The copy keeps
every node, function, input, output and declared value info, and the small initializers
whose values inference reads (shapes, axes, pads, ``Resize`` scales, scalars); every other
initializer, and every one stored outside the file, becomes a typed graph input. Nothing
external is read.

:func:`hollow_copy` is the other weight-free form, for passes that must still see the
parameters as initializers (gradient flow, ORT's gradient builder): every float initializer
keeps its name, type and dims but no data.
"""

from __future__ import annotations

import math
from typing import Any

import onnx
from google.protobuf.message import DecodeError, Message

__all__ = [
    "HOLLOW_LOCATION",
    "KEPT_ELEMENTS",
    "copy_without",
    "hollow_copy",
    "inferred_graph",
    "run_shape_inference",
    "weight_free_copy",
]

#: Initializers with at most this many elements stay in the copy: inference reads the values
#: of shape-like inputs (``Reshape``'s shape, ``Slice``'s starts, ``Resize``'s scales).
KEPT_ELEMENTS = 64


def _kept(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location != onnx.TensorProto.EXTERNAL and math.prod(tensor.dims) <= KEPT_ELEMENTS


def weight_free_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` without its weight bytes, for shape inference.

    Main-graph initializers with more than :data:`KEPT_ELEMENTS` elements, or stored
    externally, become typed graph inputs. Sparse initializers become typed graph inputs.
    Subgraphs are copied as they are.
    """
    work = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(work, name, getattr(model, name))
    work.opset_import.extend(model.opset_import)
    work.functions.extend(model.functions)
    source, graph = model.graph, work.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    declared = {value.name for value in source.input}
    for tensor in source.initializer:
        if _kept(tensor):
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    for sparse in source.sparse_initializer:
        if sparse.values.name not in declared:
            graph.input.append(
                onnx.helper.make_tensor_value_info(
                    sparse.values.name, sparse.values.data_type, list(sparse.dims)
                )
            )
    return work


def run_shape_inference(
    work: onnx.ModelProto, *, data_prop: bool = False
) -> tuple[onnx.ModelProto, str | None]:
    """``work`` (a :func:`weight_free_copy`) after best-effort ONNX shape inference, and why
    inference failed (None when it ran); on failure ``work`` itself, as the model declares it."""
    try:
        return onnx.shape_inference.infer_shapes(work, strict_mode=False, data_prop=data_prop), None
    except Exception as exc:  # best effort: what the model declares
        text = str(exc).strip()
        return work, text.splitlines()[0] if text else type(exc).__name__


def inferred_graph(model: onnx.ModelProto) -> onnx.GraphProto:
    """The main graph of ``model`` after best-effort shape inference on its weight-free copy:
    value infos and outputs as inferred; weights appear as typed graph inputs, not initializers."""
    try:
        work = weight_free_copy(model)
    except DecodeError:  # nested deeper than protobuf copies messages: what the model declares
        return model.graph
    return run_shape_inference(work)[0].graph


#: The external-data location hollow initializers name (no such file is ever written).
HOLLOW_LOCATION = "onnx-stopgrad-hollow-weights"


def hollow_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose float initializers keep their name, type and dims but no data
    (they are marked external, at :data:`HOLLOW_LOCATION`, so structure checks skip them).

    Everything else (nodes, inputs, outputs, value_info, functions, metadata) is copied, so
    passes that only read the graph's structure and types can run on it cheaply. Integer
    initializers keep their data: shape inference and ORT's constant folding read them.
    """
    from ._differentiable import FLOAT_TYPES  # that module imports this one

    hollow = copy_without(model, "graph")
    graph = copy_without(model.graph, "initializer")
    for tensor in model.graph.initializer:
        if tensor.data_type in FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
            hollow_tensor = graph.initializer.add(
                name=tensor.name, data_type=tensor.data_type, dims=tensor.dims
            )
            hollow_tensor.data_location = onnx.TensorProto.EXTERNAL  # checks then read no data
            hollow_tensor.external_data.add(key="location", value=HOLLOW_LOCATION)
        else:
            graph.initializer.append(tensor)
    hollow.graph.CopyFrom(graph)
    return hollow


def copy_without(message: Any, skipped: str) -> Any:
    """A copy of a protobuf message without one (large) field."""
    result = type(message)()
    for field, value in message.ListFields():
        if field.name == skipped:
            continue
        if isinstance(value, Message):
            getattr(result, field.name).CopyFrom(value)
        elif isinstance(value, (str, bytes, int, float)):
            setattr(result, field.name, value)
        else:  # a repeated field
            getattr(result, field.name).extend(value)
    return result
