"""The CUDA kernel (onnxruntime-gpu on a machine with a GPU; skipped elsewhere)."""

from __future__ import annotations

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
    stop_gradient,
)

pytestmark = pytest.mark.cuda

CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def cuda_available(ort) -> None:
    """Skip unless a session really runs on the CUDA provider (a GPU and CUDA libraries)."""
    if CUDA not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    probe = make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    try:
        session = ort.InferenceSession(probe, providers=[CUDA])
    except Exception as exc:  # no GPU, no driver, missing CUDA libraries
        pytest.skip(f"CUDA provider unusable here: {str(exc).splitlines()[0]}")
    if CUDA not in session.get_providers():
        pytest.skip("CUDA provider unusable here (ORT fell back to CPU)")


@pytest.fixture()
def cuda_session(cuda_available, session_factory):
    """Sessions whose every node must run on CUDA (no silent CPU fallback)."""

    def create(model: bytes, **kwargs):
        return session_factory(model, providers=[CUDA], **{"session.disable_cpu_ep_fallback": "1"}, **kwargs)

    return create


@pytest.mark.parametrize("shape", [(3, 5), (), (0,), (1024, 513)])
@pytest.mark.parametrize("type_name", [n for n, (t, _) in NUMERIC_TYPES.items() if t not in BITS_ONLY])
def test_numeric_types_bit_for_bit_on_cuda(cuda_session, type_name, shape):
    elem_type, storage = NUMERIC_TYPES[type_name]
    x = random_tensor(storage, shape, seed=3)
    (y,) = cuda_session(chain_model(elem_type, 3)).run(None, {"x": x})
    assert y.dtype == storage and y.shape == x.shape
    assert as_bytes(y) == as_bytes(x)


@pytest.mark.parametrize("type_name", list(NUMERIC_TYPES))
def test_initializer_input_on_cuda(cuda_session, type_name):
    """Covers bfloat16, which numpy cannot hand to ORT."""
    elem_type, storage = NUMERIC_TYPES[type_name]
    x = random_tensor(storage, (8, 17), seed=5)
    shape, data = output_bytes(cuda_session(initializer_chain_model(elem_type, x, 2), optimization="disable"))
    assert shape == [8, 17]
    assert data == as_bytes(x)


def test_device_resident_input_and_output(ort, cuda_session):
    """Input and output stay on the GPU (io binding): graph output copied D2D on ORT's stream."""
    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    session = cuda_session(chain_model(TensorProto.FLOAT, 4))
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    binding.bind_output("y", "cuda", 0)
    session.run_with_iobinding(binding)
    (y,) = binding.get_outputs()
    assert y.device_name().lower() == "cuda"
    assert as_bytes(y.numpy()) == as_bytes(x)


def test_stop_between_cuda_ops(cuda_session):
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["a"]),
        stop_gradient("a", "s"),
        helper.make_node("Sub", ["a", "s"], ["zero"]),
        helper.make_node("Add", ["s", "x"], ["y"]),
    ]
    info = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [4096])  # noqa: E731
    model = make_model(nodes, [info("x")], [info("zero"), info("y"), info("s")])
    x = np.linspace(-3, 3, 4096, dtype=np.float32)
    zero, y, s = cuda_session(model).run(None, {"x": x})
    assert not zero.any()
    np.testing.assert_array_equal(y, x * x + x)
    np.testing.assert_array_equal(s, x * x)


def test_strings_fall_back_to_the_cpu_kernel(cuda_available, session_factory):
    """No CUDA kernel takes strings; in a CUDA session they run on the CPU op."""
    x = np.array(["a\x00b", ""], dtype=object)
    session = session_factory(chain_model(TensorProto.STRING, 2), providers=[CUDA, "CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    assert y.tolist() == x.tolist()
