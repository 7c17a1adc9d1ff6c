"""The op's names are defined once in Python and once in C++, and they agree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from op_helpers import make_model

from onnx_stopgrad import _names

NAMES_H = Path(__file__).resolve().parents[2] / "custom_ops" / "src" / "names.h"


def _cpp_constants() -> dict[str, str]:
    text = NAMES_H.read_text()
    found = dict(re.findall(r'constexpr const char\* (k\w+) = "([^"]*)";', text))
    found.update(re.findall(r"constexpr uint32_t (k\w+) = (\d+);", text))
    return found


def test_cpp_names_match_python_names():
    cpp = _cpp_constants()
    assert cpp["kDomain"] == _names.DOMAIN
    assert cpp["kOpType"] == _names.OP_TYPE
    assert f"1.{cpp['kMinOrtApiVersion']}" == _names.MIN_ORT_VERSION
    assert _names.QUALIFIED_OP == f"{cpp['kDomain']}::{cpp['kOpType']}"


def test_runtime_resolves_the_python_names(session_factory):
    """A model spelled with the Python constants runs on the library's kernel."""
    node = helper.make_node(_names.OP_TYPE, ["x"], ["y"], domain=_names.DOMAIN)
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    x = np.array([1.5, -2.0], dtype=np.float32)
    (y,) = session_factory(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, x)


def test_misspelled_domain_is_rejected(session_factory):
    """The check above can fail: ORT knows no op outside the library's domain."""
    node = helper.make_node(_names.OP_TYPE, ["x"], ["y"], domain=_names.DOMAIN + "_x")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_names.DOMAIN + "_x", 1)],
        ir_version=10,
    )
    with pytest.raises(Exception, match=_names.OP_TYPE):
        session_factory(model.SerializeToString())


@pytest.mark.skipif(shutil.which("nm") is None, reason="binutils' nm is not installed")
def test_library_exports_only_register_custom_ops(library_path):
    out = subprocess.run(
        ["nm", "-D", "--defined-only", library_path], capture_output=True, text=True, check=True
    ).stdout
    symbols = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert symbols == ["RegisterCustomOps"]
