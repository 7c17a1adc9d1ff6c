"""StopGradient returns its input bit for bit for every element type, shape and buffer path."""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from op_helpers import (
    BITS_ONLY,
    NUMERIC_TYPES,
    as_bytes,
    chain_model,
    initializer_chain_model,
    make_model,
    output_bytes,
    random_tensor,
    run_bound,
    stop_gradient,
)

SHAPES = {"matrix": (3, 5), "scalar": (), "empty": (0,), "empty_inner": (2, 0, 3), "vector": (257,)}


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("type_name", list(NUMERIC_TYPES))
def test_numeric_types_bit_for_bit(session_factory, type_name, shape_name):
    elem_type, storage = NUMERIC_TYPES[type_name]
    shape = SHAPES[shape_name]
    x = random_tensor(storage, shape, seed=len(type_name))
    # Three stops: two internal (ORT aliases them to the input's buffer), one graph output.
    session = session_factory(chain_model(elem_type, 3))

    if elem_type not in BITS_ONLY:
        (y,) = session.run(None, {"x": x})
        assert y.dtype == storage and y.shape == x.shape
        assert as_bytes(y) == as_bytes(x)

    # A caller-owned output buffer, pre-filled with a pattern so that a missing copy shows.
    out = np.frombuffer(b"\x5a" * x.nbytes, dtype=np.uint8).view(storage).reshape(shape).copy()
    if x.size:
        assert as_bytes(out) != as_bytes(x)
    if run_bound(session, elem_type, x, out):
        assert as_bytes(out) == as_bytes(x)


@pytest.mark.parametrize("type_name", list(NUMERIC_TYPES))
def test_initializer_input_bit_for_bit(session_factory, type_name):
    """Constant input (an initializer, aliased by the first stops); output read as raw bytes."""
    elem_type, storage = NUMERIC_TYPES[type_name]
    x = random_tensor(storage, (4, 33), seed=7)
    session = session_factory(initializer_chain_model(elem_type, x, 3), optimization="disable")
    shape, data = output_bytes(session)
    assert shape == [4, 33]
    assert data == as_bytes(x)


def test_nan_payloads_survive(session_factory):
    """Quiet and signalling NaNs with payloads keep their exact bits (no float round trip)."""
    bits = np.array([0x7FC00000, 0x7F800001, 0xFFC00123, 0x7FA5A5A5, 0xFFFFFFFF], dtype=np.uint32)
    x = bits.view(np.float32)
    (y,) = session_factory(chain_model(TensorProto.FLOAT, 2)).run(None, {"x": x})
    assert y.view(np.uint32).tolist() == bits.tolist()


STRINGS = {
    "plain": ["a", "bc", "def"],
    "embedded_nul": ["a\x00b", "\x00", "tail\x00\x00", "\x00lead"],
    "empty_strings": ["", "", "x"],
    "utf8": ["grüße", "日本語", "🙂\x00🙃"],
    "long": ["x" * 10_000, "y" * 70_000],
}


@pytest.mark.parametrize("length", [1, 3])
@pytest.mark.parametrize("case", list(STRINGS))
def test_strings_with_embedded_nuls(session_factory, case, length):
    x = np.array(STRINGS[case], dtype=object)
    (y,) = session_factory(chain_model(TensorProto.STRING, length)).run(None, {"x": x})
    assert y.shape == x.shape
    assert list(y) == list(x)
    assert [len(s) for s in y] == [len(s) for s in x]


@pytest.mark.parametrize("shape", [(), (0,), (2, 0), (2, 2)])
def test_string_shapes(session_factory, shape):
    count = int(np.prod(shape, dtype=np.int64))
    x = np.array([f"s{i}\x00{i}" for i in range(count)], dtype=object).reshape(shape)
    (y,) = session_factory(chain_model(TensorProto.STRING, 2)).run(None, {"x": x})
    assert y.shape == shape
    assert y.tolist() == x.tolist()


# Packed and 8-bit float types: raw bytes in, raw bytes out (element count -> byte count).
PACKED_TYPES = {
    "float8e4m3fn": (TensorProto.FLOAT8E4M3FN, (5,), 5),
    "float8e5m2": (TensorProto.FLOAT8E5M2, (2, 3), 6),
    "int4": (TensorProto.INT4, (7,), 4),  # two elements per byte, odd count rounds up
    "uint4": (TensorProto.UINT4, (2, 4), 4),
}


@pytest.mark.parametrize("length", [1, 3])
@pytest.mark.parametrize("type_name", list(PACKED_TYPES))
def test_float8_and_int4_bytes(ort, session_factory, type_name, length):
    elem_type, shape, nbytes = PACKED_TYPES[type_name]
    raw = bytes(range(0x11, 0x11 + nbytes))
    init = helper.make_tensor("x", elem_type, shape, raw, raw=True)
    names = ["x"] + [f"s{i}" for i in range(1, length)] + ["y"]
    model = make_model(
        [stop_gradient(a, b) for a, b in itertools.pairwise(names)],
        [],
        [helper.make_tensor_value_info("y", elem_type, shape)],
        [init],
    )
    try:
        session = session_factory(model, optimization="disable")
    except Exception as exc:
        if f"Type 'tensor({type_name})'" in str(exc):
            pytest.skip(f"onnxruntime {ort.__version__} has no {type_name} tensors for custom ops")
        raise
    (value,) = session.run_with_ort_values(["y"], {})
    assert value.data_type() == f"tensor({type_name})"
    assert list(value.shape()) == list(shape)
    assert ctypes.string_at(value.data_ptr(), nbytes) == raw
