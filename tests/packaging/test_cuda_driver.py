"""The CUDA op reaches the driver at run time: the library needs no CUDA library to load,
looks for libcuda.so.1 when it registers, and keeps working on the CPU whether the driver
is absent, incomplete or present. (No GPU here: the CUDA copy itself is tested by
tests/op/test_op_cuda.py where there is one.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import onnx_stopgrad

pytest.importorskip("onnxruntime")

if not sys.platform.startswith("linux"):
    pytest.skip("libcuda.so.1 is the Linux driver", allow_module_level=True)

ENTRY_POINTS = (
    "cuMemcpyDtoDAsync_v2",
    "cuCtxGetCurrent",
    "cuCtxPushCurrent_v2",
    "cuCtxPopCurrent_v2",
    "cuStreamGetCtx",
    "cuGetErrorName",
    "cuGetErrorString",
)

# Registers the library and runs x -> StopGradient -> y on the CPU; prints "ok".
RUN_ON_CPU = """
import numpy as np, onnxruntime as ort, onnx_stopgrad
from onnx import TensorProto, helper
node = helper.make_node("StopGradient", ["x"], ["y"], domain=onnx_stopgrad.DOMAIN)
graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                          helper.make_opsetid(onnx_stopgrad.DOMAIN, 1)], ir_version=9)
session = ort.InferenceSession(model.SerializeToString(), onnx_stopgrad.session_options(),
                               providers=["CPUExecutionProvider"])
x = np.array([1.5, -0.0, np.inf], dtype=np.float32)
assert session.run(None, {"x": x})[0].tobytes() == x.tobytes()
print("ok")
"""


def _fake_driver(folder: Path, entry_points: tuple[str, ...]) -> Path:
    """A libcuda.so.1 that says on stderr when it is loaded and defines ``entry_points``."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler")
    folder.mkdir()
    source = folder / "fake_cuda.c"
    functions = "".join(f"int {name}(void) {{ return 999; }}\n" for name in entry_points)
    source.write_text(
        "#include <stdio.h>\n"
        '__attribute__((constructor)) static void loaded(void) { fputs("fake libcuda loaded\\n", stderr); }\n'
        + functions
    )
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(folder / "libcuda.so.1"), str(source)], check=True
    )
    return folder


def _run(library_path: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    if library_path:
        env["LD_LIBRARY_PATH"] = library_path
    return subprocess.run(
        [sys.executable, "-c", RUN_ON_CPU], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_library_links_no_cuda_library():
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("needs readelf")
    dynamic = subprocess.run(
        [readelf, "-d", onnx_stopgrad.get_library_path()], check=False, capture_output=True, text=True
    )
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.stdout.splitlines() if "(NEEDED)" in line]
    assert needed and not [name for name in needed if "cuda" in name.lower()], needed


@pytest.mark.parametrize(
    "entry_points", [ENTRY_POINTS, ENTRY_POINTS[:2], ()], ids=["complete", "partial", "empty"]
)
def test_a_driver_is_loaded_at_registration_and_the_cpu_op_still_works(tmp_path, entry_points):
    done = _run(str(_fake_driver(tmp_path / "driver", entry_points)))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    # Only a library built with the CUDA op looks for the driver.
    assert "fake libcuda loaded" in done.stderr


def test_no_driver_no_problem():
    done = _run(None)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
