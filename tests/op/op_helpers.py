"""Model builders and tensor helpers shared by the op-library tests (both runtimes).

A uniquely named module (not conftest) so that `from op_helpers import ...` cannot pick up
another directory's conftest.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION

onnxruntime = pytest.importorskip("onnxruntime")

#: IR version every runtime under test loads (ORT 1.19 stops at 10).
IR_VERSION = 10
ONNX_OPSET = 17


def stop_gradient(name_in: str, name_out: str) -> onnx.NodeProto:
    return helper.make_node(OP_TYPE, [name_in], [name_out], domain=DOMAIN, name=f"sg_{name_out}")


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> bytes:
    graph = helper.make_graph(
        list(nodes), "stop_gradient_test", list(inputs), list(outputs), list(initializers)
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(DOMAIN, OPSET_VERSION)],
        ir_version=IR_VERSION,
    )
    return model.SerializeToString()


def chain_model(elem_type: int, length: int, shape: Sequence[int | str] | None = None) -> bytes:
    """x -> StopGradient x `length` -> y: every stop but the last is internal (aliased)."""
    names = ["x"] + [f"s{i}" for i in range(1, length)] + ["y"]
    nodes = [stop_gradient(a, b) for a, b in itertools.pairwise(names)]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", elem_type, shape)],
        [helper.make_tensor_value_info("y", elem_type, shape)],
    )


def as_bytes(array: np.ndarray) -> bytes:
    """Raw bytes of a numeric array (bit-for-bit comparison, NaN payloads included)."""
    return np.ascontiguousarray(array).tobytes()


# Every numeric element type: (TensorProto enum, numpy storage dtype). bfloat16 and the
# float8 types have no numpy dtype ORT accepts; their bits travel in a same-width uint array.
NUMERIC_TYPES: dict[str, tuple[int, np.dtype]] = {
    "float": (TensorProto.FLOAT, np.dtype(np.float32)),
    "double": (TensorProto.DOUBLE, np.dtype(np.float64)),
    "float16": (TensorProto.FLOAT16, np.dtype(np.float16)),
    "bfloat16": (TensorProto.BFLOAT16, np.dtype(np.uint16)),
    "int8": (TensorProto.INT8, np.dtype(np.int8)),
    "int16": (TensorProto.INT16, np.dtype(np.int16)),
    "int32": (TensorProto.INT32, np.dtype(np.int32)),
    "int64": (TensorProto.INT64, np.dtype(np.int64)),
    "uint8": (TensorProto.UINT8, np.dtype(np.uint8)),
    "uint16": (TensorProto.UINT16, np.dtype(np.uint16)),
    "uint32": (TensorProto.UINT32, np.dtype(np.uint32)),
    "uint64": (TensorProto.UINT64, np.dtype(np.uint64)),
    "bool": (TensorProto.BOOL, np.dtype(np.bool_)),
}

#: Types numpy cannot name for ORT: fed and read back through OrtValues.
BITS_ONLY = {TensorProto.BFLOAT16}


def random_tensor(storage: np.dtype, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Random bits of `storage` dtype (bool: 0/1); floats get NaN payloads, infs, -0 and subnormals."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape, dtype=np.int64))
    if storage == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=count * storage.itemsize, dtype=np.uint8)
    flat = raw.view(storage).copy()
    specials = _float_specials(storage)
    flat[: min(count, len(specials))] = specials[: min(count, len(specials))]
    return flat.reshape(shape)


def _float_specials(storage: np.dtype) -> np.ndarray:
    """Bit patterns that a float round trip through a conversion would disturb."""
    if storage == np.float32:
        bits = [
            0x7FC00000,
            0x7F800001,
            0xFFC00123,
            0x7FA5A5A5,
            0x80000000,
            0x00000001,
            0x7F800000,
            0xFF800000,
        ]
        return np.array(bits, dtype=np.uint32).view(np.float32)
    if storage == np.float64:
        bits = [0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8DEADBEEF0001, 0x8000000000000000, 0x1]
        return np.array(bits, dtype=np.uint64).view(np.float64)
    if storage == np.float16:
        return np.array([0x7E00, 0x7C01, 0xFE55, 0x8000, 0x0001, 0x7C00], dtype=np.uint16).view(np.float16)
    if storage == np.uint16:  # bfloat16 bits
        return np.array([0x7FC0, 0x7F81, 0xFFA5, 0x8000, 0x0001, 0x7F80], dtype=np.uint16)
    return np.zeros(0, dtype=storage)


def ortvalue(array: np.ndarray, elem_type: int):
    """A CPU OrtValue over `array`'s memory, typed `elem_type` (None where this ORT cannot)."""
    ort = onnxruntime
    if elem_type not in BITS_ONLY:
        return ort.OrtValue.ortvalue_from_numpy(array)
    if hasattr(ort.OrtValue, "ortvalue_from_numpy_with_onnx_type"):  # ORT >= 1.20
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array, elem_type)
    return None


def run_bound(session, elem_type: int, x: np.ndarray, out: np.ndarray) -> bool:
    """Run with `x` bound as input 'x' and the caller's `out` buffer as output 'y'.

    Returns False (nothing run) where this ORT cannot wrap `elem_type` in an OrtValue.
    """
    x_value, out_value = ortvalue(x, elem_type), ortvalue(out, elem_type)
    if x_value is None or out_value is None:
        return False
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_value)
    binding.bind_ortvalue_output("y", out_value)
    session.run_with_iobinding(binding)
    return True


def initializer_chain_model(elem_type: int, data: np.ndarray, length: int) -> bytes:
    """An initializer holding `data`'s raw bits -> StopGradient x `length` -> y."""
    init = helper.make_tensor("x", elem_type, data.shape, data.tobytes(), raw=True)
    names = ["x"] + [f"s{i}" for i in range(1, length)] + ["y"]
    nodes = [stop_gradient(a, b) for a, b in itertools.pairwise(names)]
    return make_model(nodes, [], [helper.make_tensor_value_info("y", elem_type, data.shape)], [init])


def output_bytes(session, name: str = "y") -> tuple[list[int], bytes]:
    """Shape and raw bytes of output `name`, read through its OrtValue (works for bfloat16)."""
    (value,) = session.run_with_ort_values([name], {})
    shape = list(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * _ELEMENT_BYTES[value.data_type()]
    return shape, ctypes.string_at(value.data_ptr(), nbytes) if nbytes else b""


_ELEMENT_BYTES = {f"tensor({name})": storage.itemsize for name, (_, storage) in NUMERIC_TYPES.items()}
