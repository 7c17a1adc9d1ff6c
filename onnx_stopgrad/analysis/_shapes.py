"""Tensor shapes after ONNX shape inference, with symbolic dimensions made concrete.

Symbolic input dimensions (``batch``, ``seq``) take the value the user gives; any other
unknown dimension counts as 1. Each substitution is recorded so reports can state it.
StopGradient nodes are read as Identity (same shape and type) during inference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..graph import is_stop_gradient, run_shape_inference, weight_free_copy

__all__ = ["UNKNOWN_DIM_VALUE", "ShapeTable", "TensorInfo", "infer_shapes"]

log = logging.getLogger(__name__)

#: Value used for a dimension that is neither known nor given with ``--dim``.
UNKNOWN_DIM_VALUE = 1


@dataclass(frozen=True)
class TensorInfo:
    """Element type and concrete shape of one tensor (``shape`` None: rank unknown)."""

    elem_type: int
    shape: tuple[int, ...] | None

    @property
    def elements(self) -> int | None:
        return None if self.shape is None else int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int | None:
        size = _itemsize(self.elem_type)
        elements = self.elements
        return None if size is None or elements is None else elements * size


@dataclass(frozen=True)
class ShapeTable:
    """Shapes of the main graph's tensors and the dimension values that were assumed."""

    tensors: dict[str, TensorInfo]
    #: Symbolic dimension name -> value used (given by the user or the default).
    dims_used: dict[str, int] = field(default_factory=dict)
    #: Symbolic input dimension names no value was given for (the default was used).
    dims_defaulted: tuple[str, ...] = ()
    #: Dimensions of intermediate tensors inference could not compute (counted as 1).
    unknown_intermediate_dims: int = 0

    def get(self, name: str) -> TensorInfo | None:
        return self.tensors.get(name)

    #: Element counts of tensors of unknown rank that a size-keeping op (Reshape,
    #: Transpose, ...) made from a tensor of known size.
    sizes: dict[str, int] = field(default_factory=dict)

    def nbytes(self, name: str) -> int | None:
        info = self.tensors.get(name)
        if info is None:
            return None
        if info.shape is None and name in self.sizes:
            itemsize = _itemsize(info.elem_type)
            return None if itemsize is None else self.sizes[name] * itemsize
        return info.nbytes


def _itemsize(elem_type: int) -> int | None:
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return None


class _DimResolver:
    def __init__(self, given: Mapping[str, int]) -> None:
        self.given = dict(given)
        self.used: dict[str, int] = {}
        self.defaulted: dict[str, None] = {}
        self.inputs_done = False
        self.intermediate = 0

    def value(self, dim: onnx.TensorShapeProto.Dimension) -> int:
        if dim.HasField("dim_value"):
            return int(dim.dim_value)
        name = dim.dim_param or "?"
        if self.inputs_done:
            self.intermediate += 1
            return self.given.get(name, UNKNOWN_DIM_VALUE)
        if name in self.given:
            self.used[name] = self.given[name]
            return self.given[name]
        self.used[name] = UNKNOWN_DIM_VALUE
        self.defaulted.setdefault(name, None)
        return UNKNOWN_DIM_VALUE


def _concrete_inputs(graph: onnx.GraphProto, resolver: _DimResolver) -> None:
    """Replace symbolic input dimensions by values so inference can compute more shapes."""
    for value in graph.input:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = resolver.value(dim)


def _info(value: onnx.ValueInfoProto, resolver: _DimResolver) -> TensorInfo | None:
    if not value.type.HasField("tensor_type"):
        return None
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorInfo(tensor_type.elem_type, None)
    return TensorInfo(tensor_type.elem_type, tuple(resolver.value(d) for d in tensor_type.shape.dim))


def _without_float_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph package's weight-free copy, shapes recomputed rather than read from the file."""
    work = weight_free_copy(model)
    # Stored shapes may carry exporter symbols (unk__0); inference recomputes them.
    del work.graph.value_info[:]
    for value in work.graph.output:
        value.type.tensor_type.ClearField("shape")
    return work


def infer_shapes(model: onnx.ModelProto, dims: Mapping[str, int] | None = None) -> ShapeTable:
    """Shapes of every main-graph tensor, inferred with the given symbolic dimension values."""
    resolver = _DimResolver(dims or {})
    work = _without_float_weights(model)
    graph = work.graph
    for node in graph.node:
        if is_stop_gradient(node):
            node.op_type, node.domain = "Identity", ""
            del node.attribute[:]
    _concrete_inputs(graph, resolver)
    resolver.inputs_done = True
    inferred, reason = run_shape_inference(work, data_prop=True)
    if reason is not None:
        log.warning("shape inference failed (%s); using the shapes stored in the model", reason)
    tensors: dict[str, TensorInfo] = {}
    for tensor in model.graph.initializer:
        tensors[tensor.name] = TensorInfo(tensor.data_type, tuple(int(d) for d in tensor.dims))
    g = inferred.graph
    for value in [*g.input, *g.value_info, *g.output]:
        if value.name in tensors:
            continue
        info = _info(value, resolver)
        if info is not None:
            tensors[value.name] = info
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    tensors.setdefault(
                        node.output[0], TensorInfo(attr.t.data_type, tuple(int(d) for d in attr.t.dims))
                    )
    return ShapeTable(
        tensors, resolver.used, tuple(resolver.defaulted), resolver.intermediate, _propagate_sizes(g, tensors)
    )


_SIZE_KEEPING = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Identity",
        "Dropout",
        "Cast",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "Erf",
        "Neg",
        "Sqrt",
        "Exp",
        "Gelu",
        "LayerNormalization",
    }
)


def _propagate_sizes(graph: onnx.GraphProto, tensors: dict[str, TensorInfo]) -> dict[str, int]:
    """Element counts for unknown-rank outputs of ops that keep their first input's size."""
    sizes: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in _SIZE_KEEPING or not node.input or not node.output:
            continue
        source = tensors.get(node.input[0])
        elements = sizes.get(node.input[0]) if source is None or source.shape is None else source.elements
        out = tensors.get(node.output[0])
        if elements is not None and out is not None and out.shape is None:
            sizes[node.output[0]] = elements
    return sizes
