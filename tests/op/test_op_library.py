"""Loading the library: the Python glue's errors and the C ABI's version negotiation."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from onnx import TensorProto
from op_helpers import chain_model

import onnx_stopgrad
from onnx_stopgrad import _library
from onnx_stopgrad._names import MIN_ORT_VERSION
from onnx_stopgrad.errors import LibraryError


def test_library_path_points_at_the_built_library(library_path):
    assert library_path.endswith("/_lib/libonnx_stopgrad.so")
    assert onnx_stopgrad.get_library_path() == library_path


def test_missing_library_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_library, "LIBRARY_FILE", "libnot_there.so")
    with pytest.raises(LibraryError, match=r"run `make build` or `pip install \.`"):
        _library.get_library_path()


def test_session_options_registers_into_given_options(ort):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    returned = onnx_stopgrad.session_options(options)
    assert returned is options
    assert returned.intra_op_num_threads == 1


@pytest.mark.parametrize("version", ["1.17.3", "1.9.0", "0.5"])
def test_too_old_onnxruntime_is_refused_in_python(ort, monkeypatch, version):
    monkeypatch.setattr(ort, "__version__", version)
    with pytest.raises(LibraryError, match=f">= {MIN_ORT_VERSION}"):
        onnx_stopgrad.session_options()


@pytest.mark.parametrize("version", ["1.18.0", "1.19.2", "1.31.1", "1.100.0", "2.0.0rc1"])
def test_new_enough_versions_pass(version):
    _library.check_runtime_version(version)


# --- the C ABI, driven with a fake OrtApiBase (what an ORT older than 1.18 looks like) ---

_GetApi = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
_GetVersionString = ctypes.CFUNCTYPE(ctypes.c_void_p)
_CreateStatus = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)


class _OrtApiBase(ctypes.Structure):
    _fields_ = [("GetApi", _GetApi), ("GetVersionString", _GetVersionString)]


class FakeOldRuntime:
    """An OrtApiBase offering API versions 1..max_api only; its OrtApi has just CreateStatus."""

    STATUS = 0x5A5A0000  # what CreateStatus returns: compared, never dereferenced

    def __init__(self, max_api: int, version: bytes) -> None:
        self.asked: list[int] = []
        self.statuses: list[tuple[int, str]] = []
        self._version = ctypes.create_string_buffer(version)
        self._create_status = _CreateStatus(self._record_status)
        # OrtApi's first member is CreateStatus; nothing else may be touched on an old runtime.
        self._api = (ctypes.c_void_p * 1)(ctypes.cast(self._create_status, ctypes.c_void_p))
        self._get_api = _GetApi(lambda v: self._get_api_impl(v, max_api))
        self._get_version = _GetVersionString(lambda: ctypes.addressof(self._version))
        self.base = _OrtApiBase(self._get_api, self._get_version)

    def _get_api_impl(self, version: int, max_api: int) -> int | None:
        self.asked.append(version)
        return ctypes.addressof(self._api) if 1 <= version <= max_api else None

    def _record_status(self, code: int, message: bytes) -> int:
        self.statuses.append((code, message.decode()))
        return self.STATUS


def _register(library_path: str, runtime: FakeOldRuntime) -> int | None:
    library = ctypes.CDLL(library_path)
    register = library.RegisterCustomOps
    register.restype = ctypes.c_void_p
    register.argtypes = [ctypes.c_void_p, ctypes.POINTER(_OrtApiBase)]
    return register(None, ctypes.byref(runtime.base))


@pytest.mark.parametrize(("max_api", "version"), [(17, b"1.17.3"), (10, b"1.10.0")])
def test_too_old_runtime_gets_one_clear_status(library_path, max_api, version):
    runtime = FakeOldRuntime(max_api, version)
    assert _register(library_path, runtime) == FakeOldRuntime.STATUS
    assert len(runtime.statuses) == 1
    code, message = runtime.statuses[0]
    assert code == 1  # ORT_FAIL
    assert "onnx_stopgrad needs ONNX Runtime >= 1.18 (API 18)" in message
    assert f"this runtime offers API {max_api}" in message
    assert version.decode() in message
    # Every version from the headers' down to 18 was tried before giving up.
    assert 18 in runtime.asked and max(runtime.asked) >= 19


def test_session_options_twice_on_the_same_options(ort):
    """ORT refuses options that register the domain twice; a second call must not do that."""
    options = onnx_stopgrad.session_options()
    assert onnx_stopgrad.session_options(options) is options
    session = ort.InferenceSession(
        chain_model(TensorProto.FLOAT, 2), options, providers=["CPUExecutionProvider"]
    )
    (y,) = session.run(None, {"x": np.array([1.0, -2.0], dtype=np.float32)})
    assert y.tolist() == [1.0, -2.0]
