"""Bytes per element of ONNX tensor types, from ``onnx.helper`` (one table for the package)."""

from __future__ import annotations

import onnx

__all__ = ["ITEM_SIZE", "PACKED_BITS", "tensor_nbytes"]

#: Element types stored several to a byte: bits per element.
PACKED_BITS: dict[int, int] = {
    getattr(onnx.TensorProto, name): bits
    for name, bits in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
    if hasattr(onnx.TensorProto, name)
}
#: Types whose packing this table does not know (6-bit floats): no size is claimed for them.
_UNKNOWN = frozenset(
    getattr(onnx.TensorProto, name)
    for name in ("FLOAT6E2M3", "FLOAT6E3M2")
    if hasattr(onnx.TensorProto, name)
)


def _item_sizes() -> dict[int, int]:
    sizes: dict[int, int] = {}
    for value in onnx.TensorProto.DataType.values():
        if (
            value in PACKED_BITS
            or value in _UNKNOWN
            or value in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING)
        ):
            continue
        try:
            sizes[value] = int(onnx.helper.tensor_dtype_to_np_dtype(value).itemsize)
        except (KeyError, TypeError, ValueError):  # a type this onnx cannot map to numpy
            continue
    return sizes


#: Bytes per element of every fixed-size type stored one or more bytes per element
#: (float8, complex and the rest included).
ITEM_SIZE: dict[int, int] = _item_sizes()


def tensor_nbytes(data_type: int, dims: list[int]) -> int | None:
    """Bytes a tensor's raw data occupies; None for strings, unknown types, negative dims."""
    if any(d < 0 for d in dims):
        return None
    count = 1
    for dim in dims:
        count *= dim
    if data_type in PACKED_BITS:
        return (count * PACKED_BITS[data_type] + 7) // 8
    size = ITEM_SIZE.get(data_type)
    return None if size is None else count * size
