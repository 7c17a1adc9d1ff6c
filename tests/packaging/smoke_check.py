"""Check an installed onnx-stopgrad: `onnx-stopgrad insert`, then an inference session through the op.

    python tests/packaging/smoke_check.py

Run by tests/packaging (inside fresh venvs holding only the package and onnxruntime) and by
cibuildwheel's test step. Uses only the installed package, onnx, numpy and onnxruntime.
Prints "ok: ..." and exits 0, or raises.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

import onnx_stopgrad


def tiny_model() -> onnx.ModelProto:
    """y = Relu(x) * 2, with the Relu's output named h (where the stop goes)."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu"),
            helper.make_node("Add", ["h", "h"], ["y"], name="double"),
        ],
        "smoke",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def main() -> None:
    cli = shutil.which("onnx-stopgrad", path=str(Path(sys.executable).parent)) or shutil.which(
        "onnx-stopgrad"
    )
    assert cli is not None, "the onnx-stopgrad command is not installed"
    with tempfile.TemporaryDirectory() as scratch:
        source, stopped = Path(scratch, "model.onnx"), Path(scratch, "stopped.onnx")
        onnx.save(tiny_model(), str(source))
        subprocess.run([cli, "insert", str(source), "--at", "h", "-o", str(stopped)], check=True)
        model = onnx.load(str(stopped))
        ops = [(n.domain, n.op_type) for n in model.graph.node]
        assert (onnx_stopgrad.DOMAIN, onnx_stopgrad.OP_TYPE) in ops, ops
        options = onnx_stopgrad.session_options()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = onnxruntime.InferenceSession(str(stopped), options, providers=["CPUExecutionProvider"])
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -0.0, -4.5]], dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x, 0) * 2)
    print(f"ok: onnx-stopgrad {onnx_stopgrad.__version__}, onnxruntime {onnxruntime.__version__}, {ops}")


if __name__ == "__main__":
    main()
