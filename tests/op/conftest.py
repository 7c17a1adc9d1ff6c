"""Fixtures for the op-library tests (run under both runtimes); helpers live in op_helpers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

onnxruntime = pytest.importorskip("onnxruntime")

# A runtime built without CUDA (the training runtime, onnxruntime-training-cpu) can never
# run the CUDA tests: do not collect them there at all. A CUDA build on a machine without
# a GPU still collects them, and they skip with the reason.
collect_ignore = (
    [] if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else ["test_op_cuda.py"]
)


@pytest.fixture(scope="session")
def ort():
    return onnxruntime


@pytest.fixture(scope="session")
def library_path() -> str:
    from onnx_stopgrad import get_library_path

    return get_library_path()


@pytest.fixture()
def session_factory(ort):
    """Build a CPU InferenceSession with the library registered."""
    from onnx_stopgrad import session_options

    def create(
        model: bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        optimization: str = "default",
        **config: str,
    ):
        options = session_options()
        if optimization == "disable":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(model, options, providers=list(providers))

    return create
