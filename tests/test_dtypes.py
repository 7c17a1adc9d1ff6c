"""Element sizes come from onnx.helper: float8, complex and 4-bit types are sized too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx_stopgrad._dtypes import ITEM_SIZE, tensor_nbytes
from onnx_stopgrad._io import load_model
from onnx_stopgrad.errors import ModelLoadError


@pytest.mark.parametrize(
    "dtype,dims,expected",
    [(TensorProto.FLOAT8E4M3FN, [3, 2], 6), (TensorProto.COMPLEX128, [2], 32), (TensorProto.INT4, [3], 2),
     (TensorProto.UINT4, [4], 2), (TensorProto.DOUBLE, [0], 0), (TensorProto.STRING, [2], None),
     (TensorProto.FLOAT, [-1], None)],
)  # fmt: skip
def test_sizes(dtype: int, dims: list[int], expected: int | None) -> None:
    assert tensor_nbytes(dtype, dims) == expected


def test_sizes_agree_with_numpy() -> None:
    for dtype, size in ITEM_SIZE.items():
        assert size == helper.tensor_dtype_to_np_dtype(dtype).itemsize


def test_short_external_float8_data_is_refused(tmp_path: Path) -> None:
    """The old hand table had no float8: a truncated data file went unnoticed until ORT read it."""
    tensor = helper.make_tensor(
        "w", TensorProto.FLOAT8E4M3FN, [64], np.zeros(64, np.uint8).tobytes(), raw=True
    )
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w"], ["y"], to=TensorProto.FLOAT)], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])], [tensor],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.bin", size_threshold=0)
    data = tmp_path / "m.bin"
    data.write_bytes(data.read_bytes()[:40])  # 40 of the 64 bytes
    with pytest.raises(ModelLoadError, match=r"m\.bin"):
        load_model(tmp_path / "m.onnx")
