"""The structural checks the scan makes on every graph, and their one-line messages.

``onnx.checker.check_model`` costs about as much as loading the model, so the scan does
not call it (the file commands run it once on their input: see
``onnx_stopgrad.passes._validity``); the scan in :mod:`._index` checks the same structure with set lookups
while it walks the graph (see :func:`._index.scan`). What it refuses:

* a node input that is not a graph input, initializer, outer-scope name (subgraphs) or
  the output of an earlier node (dangling reads, cycles, unsorted nodes);
* a name defined twice (two producers, two initializers, an initializer that is also a
  node output, ...);
* a graph output that nothing visible defines (a body may pass an outer tensor through);
* an initializer whose data is too short for its shape (raw_data or typed field), with
  a negative or overflowing dimension, an UNDEFINED element type or a string in raw_data;
* names that are not valid UTF-8, and subgraphs nested deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from .._dtypes import ITEM_SIZE, PACKED_BITS
from ..errors import InvalidModelError
from ._walk import MAX_DEPTH, not_utf8_error

__all__ = ["ITEM_SIZE", "MAX_DEPTH", "check_text", "invalid", "not_utf8_error", "tensor_problem", "where"]

_FIX = "fix or re-export the model (onnx.checker.check_model lists its problems)"

_T = onnx.TensorProto
#: Int4-like types, stored two to an int32 in the typed field.
_HALF_BYTE = frozenset(t for t, bits in PACKED_BITS.items() if bits == 4)
#: Typed field holding the values of each type, and how many values one element takes.
_FIELD: dict[int, tuple[str, int]] = {
    _T.FLOAT: ("float_data", 1),
    _T.COMPLEX64: ("float_data", 2),
    _T.DOUBLE: ("double_data", 1),
    _T.COMPLEX128: ("double_data", 2),
    _T.INT64: ("int64_data", 1),
    _T.UINT32: ("uint64_data", 1),
    _T.UINT64: ("uint64_data", 1),
    _T.STRING: ("string_data", 1),
    **{
        t: ("int32_data", 1)
        for t in (
            _T.INT32,
            _T.INT16,
            _T.INT8,
            _T.UINT16,
            _T.UINT8,
            _T.BOOL,
            _T.FLOAT16,
            _T.BFLOAT16,
            _T.FLOAT8E4M3FN,
            _T.FLOAT8E4M3FNUZ,
            _T.FLOAT8E5M2,
            _T.FLOAT8E5M2FNUZ,
        )
    },
}
_INT64_MAX = 2**63 - 1


def invalid(message: str) -> InvalidModelError:
    """``invalid model: <message>; <how to fix>``."""
    return InvalidModelError(f"invalid model: {message}; {_FIX}")


def where(path: str) -> str:
    return f"subgraph {path}" if path else "the main graph"


def check_text(names: Iterable[str]) -> None:
    """Refuse when a name is ``bytes``: protobuf returns invalid UTF-8 strings that way."""
    try:
        "".join(names)  # one C-level pass; a bytes item raises TypeError
    except TypeError:
        raise not_utf8_error() from None


def tensor_problem(tensor: onnx.TensorProto) -> str | None:
    """What is wrong with an initializer's stored data, or None (external data: see _io)."""
    if tensor.data_location == _T.EXTERNAL:
        return None
    dtype = tensor.data_type
    if dtype == _T.UNDEFINED:
        return "has the element type UNDEFINED"
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            return f"has a negative dimension ({dim})"
        count *= dim
    if count > _INT64_MAX:
        return "has dimensions whose product overflows int64"
    raw = tensor.raw_data
    if raw:
        if dtype == _T.STRING:
            return "stores strings in raw_data"
        size = ITEM_SIZE.get(dtype)
        bits = PACKED_BITS.get(dtype, 0)
        need = count * size if size is not None else (count * bits + 7) // 8
        if len(raw) < need:
            return f"has {len(raw)} bytes of raw_data; its shape and type need {need}"
        return None
    if count == 0:
        return None
    field, per_element = _FIELD.get(dtype, (None, 1))
    if dtype in _HALF_BYTE:
        field, count = "int32_data", (count + 1) // 2
    if field is not None and len(getattr(tensor, field)) < count * per_element:
        return f"has {len(getattr(tensor, field))} values in {field}; its shape needs {count * per_element}"
    return None
