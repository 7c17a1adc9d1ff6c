"""The op library under ONNX Runtime with odd tensors: empty, 0-d, non-contiguous numpy
views, strings with embedded NULs, and (``large``) a tensor of more than 2**31 bytes.

The reference is the input itself, read back through numpy, and ORT's own Identity.
Both placements are run: StopGradient as the graph output (ORT gives it its own buffer)
and inside the graph (aliased, zero copy), followed by Identity.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE, OPSET_VERSION

ort = pytest.importorskip("onnxruntime")

_TYPES = {
    "float32": (np.float32, TensorProto.FLOAT),
    "float64": (np.float64, TensorProto.DOUBLE),
    "float16": (np.float16, TensorProto.FLOAT16),
    "int8": (np.int8, TensorProto.INT8),
    "uint64": (np.uint64, TensorProto.UINT64),
    "bool": (np.bool_, TensorProto.BOOL),
    "string": (object, TensorProto.STRING),
}


def _model(elem_type: int, internal: bool, op: str = OP_TYPE) -> bytes:
    domain = DOMAIN if op == OP_TYPE else ""
    nodes = [helper.make_node(op, ["x"], ["s" if internal else "y"], domain=domain, name="n0")]
    if internal:
        nodes.append(helper.make_node("Identity", ["s"], ["y"], name="after"))
    graph = helper.make_graph(
        nodes,
        "odd",
        [helper.make_tensor_value_info("x", elem_type, None)],
        [helper.make_tensor_value_info("y", elem_type, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    )
    model.ir_version = 10
    return model.SerializeToString()


_SESSIONS: dict[tuple, object] = {}


def _run(elem_type: int, internal: bool, x: np.ndarray, op: str = OP_TYPE) -> np.ndarray:
    from onnx_stopgrad import session_options

    key = (elem_type, internal, op)
    if key not in _SESSIONS:
        _SESSIONS[key] = ort.InferenceSession(
            _model(elem_type, internal, op), session_options(), providers=["CPUExecutionProvider"]
        )
    return _SESSIONS[key].run(None, {"x": x})[0]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and all(p == q for p, q in zip(a.ravel(), b.ravel(), strict=True))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _values(dtype, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    if dtype is object:
        words = ["", "a\x00b", "\x00", "\x00\x00tail", "ünï\x00cödé", "x" * 1000 + "\x00y"]
        return np.array([words[i % len(words)] for i in range(count)], dtype=object).reshape(shape)
    raw = np.random.default_rng(count).integers(0, 255, size=count * np.dtype(dtype).itemsize, dtype=np.uint8)
    values = raw.view(dtype) if dtype is not np.bool_ else raw % 2 == 1
    return values.reshape(shape)


@pytest.mark.parametrize("internal", [False, True], ids=["graph-output", "aliased"])
@pytest.mark.parametrize("type_name", sorted(_TYPES))
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 5), (0, 0), (1,), (7, 1, 3)], ids=str)
def test_empty_scalar_and_small_shapes(type_name, shape, internal) -> None:
    dtype, elem_type = _TYPES[type_name]
    x = _values(dtype, shape)
    y = _run(elem_type, internal, x)
    assert _same(y, x)
    assert _same(y, _run(elem_type, internal, x, op="Identity"))


def _views(dtype) -> dict[str, np.ndarray]:
    base = _values(dtype, (6, 8, 4))
    return {
        "strided": base[:, ::2, :],
        "transposed": base.transpose(2, 0, 1),
        "reversed": base[::-1, :, ::-1],
        "fortran": np.asfortranarray(base),
        "column": base[:, 3, :],
        "broadcast": np.broadcast_to(base[0, 0, :], (5, 4)),
        "zero-stride-scalar": np.broadcast_to(base[0, 0, 0], (3, 3)),
    }


@pytest.mark.parametrize("internal", [False, True], ids=["graph-output", "aliased"])
@pytest.mark.parametrize("type_name", ["float32", "float64", "int8", "string"])
@pytest.mark.parametrize("view", sorted(_views(np.float32)), ids=str)
def test_non_contiguous_views(type_name, view, internal) -> None:
    dtype, elem_type = _TYPES[type_name]
    x = _views(dtype)[view]
    if dtype is not object:
        assert not x.flags["C_CONTIGUOUS"] or view == "fortran"
    snapshot = np.array(x, copy=True)
    y = _run(elem_type, internal, x)
    assert _same(y, np.ascontiguousarray(snapshot)), f"{view}: values came out in another order"
    assert _same(x, snapshot), "the input array was changed"


def test_strings_with_nuls_survive_a_chain() -> None:
    x = _values(object, (4, 3))
    y = _run(TensorProto.STRING, True, x)
    assert [len(s) for s in y.ravel()] == [len(s) for s in x.ravel()]
    assert _same(y, x)


@pytest.mark.large
@pytest.mark.parametrize("internal", [False, True], ids=["graph-output", "aliased"])
def test_tensor_over_two_gib(internal) -> None:
    """2**31 + 64 uint8 elements: counts and byte sizes past INT32_MAX (peak RSS measured: 4.5 GiB)."""
    psutil = pytest.importorskip("psutil")
    if psutil.virtual_memory().available < 12 * 2**30:
        pytest.skip("needs ~4 GiB for a few seconds and leaves room for others")
    count = 2**31 + 64
    x = np.empty(count, np.uint8)
    x[: 1 << 20] = np.arange(1 << 20, dtype=np.uint64).astype(np.uint8)
    x[1 << 20 :] = 7
    x[-64:] = np.arange(64, dtype=np.uint8)  # the tail past 2**31 is where overflow shows
    y = _run(TensorProto.UINT8, internal, x)
    assert y.shape == x.shape
    assert np.array_equal(y[-1024:], x[-1024:]) and np.array_equal(y[: 1 << 20], x[: 1 << 20])
    step = 1 << 26  # compare in 64 MiB pieces: no 2 GiB temporary
    assert all(np.array_equal(y[i : i + step], x[i : i + step]) for i in range(0, count, step))
    del y
    _SESSIONS.clear()
