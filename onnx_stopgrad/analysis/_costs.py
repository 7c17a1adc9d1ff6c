"""Forward FLOPs of a node and the activations its backward pass keeps, from shapes.

Assumptions (also stated in every report):

* MatMul / Gemm: 2*M*N*K; Conv: 2 * output elements * (input channels / group) * kernel
  size; ConvTranspose: the same with input and output swapped.
* Data movement (Reshape, Transpose, Gather, Slice, Concat, Cast, ...): 0 FLOPs.
* Everything else: one FLOP per element of its largest input or output.
* Backward of a node: one forward's worth of FLOPs per input that needs a gradient
  (exact for MatMul/Gemm/Conv: dX and dW each cost one product).
* Activations kept for backward, when ONNX Runtime cannot say: nothing for ops whose
  gradient needs only shapes (Add, Reshape, ...), the output for Relu/Sigmoid/Tanh/
  Softmax/Exp-like ops, the float non-parameter inputs for everything else.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from ._shapes import ShapeTable

__all__ = ["COST_ASSUMPTIONS", "forward_flops", "kept_for_backward"]

COST_ASSUMPTIONS: tuple[str, ...] = (
    "forward FLOPs: MatMul/Gemm 2*M*N*K, Conv 2*out_elements*(C_in/group)*kernel_size, "
    "data-movement ops 0, any other op 1 per element of its largest tensor",
    "backward FLOPs of a node = its forward FLOPs x the number of its inputs that need a gradient",
    "activation bytes = elements x element size of each forward tensor the backward pass reads "
    "(parameters excluded), each tensor counted once",
    "subgraphs (If/Loop/Scan bodies) are not costed",
)

_DATA_MOVEMENT = frozenset(
    {
        "Reshape",
        "Transpose",
        "Gather",
        "GatherElements",
        "GatherND",
        "Slice",
        "Concat",
        "Split",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Identity",
        "Shape",
        "Size",
        "Cast",
        "CastLike",
        "Expand",
        "Tile",
        "Pad",
        "Constant",
        "ConstantOfShape",
        "Dropout",
        "DepthToSpace",
        "SpaceToDepth",
        "ScatterND",
        "ScatterElements",
        "Range",
        "Where",
        "StopGradient",
    }
)

# Ops whose gradient needs no activation (only shapes) or only the node's output.
_NEEDS_NOTHING = frozenset(
    {
        "Add",
        "Sub",
        "Neg",
        "Identity",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Split",
        "Slice",
        "Expand",
        "ReduceSum",
        "ReduceMean",
        "Cast",
        "Gather",
        "Dropout",
        "Pad",
        "Tile",
        "StopGradient",
    }
)
_NEEDS_OUTPUT = frozenset({"Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Exp", "Sqrt", "LeakyRelu"})


def _elements(shape: tuple[int, ...] | None) -> int:
    return 0 if shape is None else int(np.prod(shape, dtype=np.int64))


def _shape(table: ShapeTable, name: str) -> tuple[int, ...] | None:
    info = table.get(name) if name else None
    return None if info is None else info.shape


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def forward_flops(node: onnx.NodeProto, table: ShapeTable) -> int:
    """Estimated FLOPs of one forward evaluation of ``node`` (0 when shapes are unknown)."""
    op = node.op_type
    inputs = [_shape(table, name) for name in node.input]
    outputs = [_shape(table, name) for name in node.output]
    out = outputs[0] if outputs else None
    if op in _DATA_MOVEMENT:
        return 0
    if (
        op in ("MatMul", "MatMulInteger", "FusedMatMul")
        and len(inputs) >= 2
        and inputs[0]
        and out is not None
    ):
        return 2 * _elements(out) * inputs[0][-1]
    if op == "Gemm" and len(inputs) >= 2 and inputs[0] and out is not None:
        k = inputs[0][0] if _attr(node, "transA", 0) else inputs[0][-1]
        return 2 * _elements(out) * k + (_elements(out) if len(inputs) > 2 else 0)
    if op == "Conv" and len(inputs) >= 2 and inputs[1] and out is not None:
        weight = inputs[1]  # (C_out, C_in/group, k...)
        return 2 * _elements(out) * _elements(weight[1:])
    if op == "ConvTranspose" and len(inputs) >= 2 and inputs[1] and inputs[0]:
        weight = inputs[1]  # (C_in, C_out/group, k...)
        return 2 * _elements(inputs[0]) * _elements(weight[1:])
    sizes = [_elements(s) for s in (*inputs, *outputs)]
    return max(sizes, default=0)


def kept_for_backward(node: onnx.NodeProto, parameters: Iterable[str]) -> list[str]:
    """Tensors the backward pass of ``node`` is assumed to keep (static rule, see module doc)."""
    if node.op_type in _NEEDS_NOTHING:
        return []
    if node.op_type in _NEEDS_OUTPUT:
        return [name for name in node.output[:1] if name]
    params = set(parameters)
    return [name for name in node.input if name and name not in params]
