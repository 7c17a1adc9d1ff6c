"""Model I/O: clear load errors, atomic writes, external data kept on disk and inside the model dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._io import default_output_path, external_data_files, load_model, save_model
from onnx_stopgrad.errors import ModelLoadError, ModelSaveError


def _model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(weight.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(weight.shape))],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save_external(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)


def test_missing_directory_and_garbage_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "absent.onnx")
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(tmp_path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(ModelLoadError):
        load_model(garbage)


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    full = _model(np.arange(1000, dtype=np.float32)).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ModelLoadError):
        load_model(path)


def test_external_data_is_not_loaded_and_is_copied_when_moving(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir(), out_dir.mkdir()
    _save_external(_model(weight), src_dir / "m.onnx")

    proto, directory = load_model(src_dir / "m.onnx")
    assert directory == src_dir.resolve()
    assert proto.graph.initializer[0].raw_data == b""  # weights stayed on disk
    assert external_data_files(proto) == ["weights.bin"]

    save_model(proto, out_dir / "m.onnx", directory)
    reloaded = onnx.load(str(out_dir / "m.onnx"))  # loads the copied data
    np.testing.assert_array_equal(numpy_helper.to_array(reloaded.graph.initializer[0]), weight)
    assert (src_dir / "weights.bin").exists()


def test_same_directory_output_references_the_same_data(tmp_path: Path) -> None:
    weight = np.ones(64, np.float32)
    _save_external(_model(weight), tmp_path / "m.onnx")
    before = (tmp_path / "weights.bin").stat().st_mtime_ns
    proto, directory = load_model(tmp_path / "m.onnx")
    save_model(proto, tmp_path / "m2.onnx", directory)
    assert (tmp_path / "weights.bin").stat().st_mtime_ns == before
    reloaded = onnx.load(str(tmp_path / "m2.onnx"))
    np.testing.assert_array_equal(numpy_helper.to_array(reloaded.graph.initializer[0]), weight)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_model_directory_is_refused(tmp_path: Path, location: str) -> None:
    model = _model(np.ones(4, np.float32))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="outside"):
        load_model(path)


def test_symlinked_external_data_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    os.symlink(tmp_path / "secret.bin", tmp_path / "d" / "weights.bin")
    model = _model(np.ones(4, np.float32))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="weights.bin")
    path = tmp_path / "d" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="outside"):
        load_model(path)


def test_failed_write_leaves_previous_output_and_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores directory permissions
            pytest.skip("running as a user that can write to read-only directories")
        with pytest.raises(ModelSaveError):
            save_model(_model(np.ones(2, np.float32)), target)
    finally:
        os.chmod(tmp_path, 0o700)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_missing_output_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSaveError, match="does not exist"):
        save_model(_model(np.ones(2, np.float32)), tmp_path / "nope" / "m.onnx")


def test_default_output_path() -> None:
    assert default_output_path("dir/model.onnx") == Path("dir/model.stopgrad.onnx")
    assert default_output_path("model") == Path("model.stopgrad.onnx")


def test_failed_rename_removes_the_temporary_file(tmp_path: Path) -> None:
    """A target that cannot be replaced (a directory) fails cleanly, leaving nothing behind."""
    (tmp_path / "out.onnx").mkdir()
    with pytest.raises(ModelSaveError, match="nothing was written"):
        save_model(_model(np.ones(2, np.float32)), tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


@pytest.mark.parametrize(
    "key,value",
    [("length", str(2**40)), ("length", "-5"), ("offset", "abc"), ("offset", str(2**62)),
     ("location", "missing.bin"), ("location", "x" * 5000), ("length", "8")],
)  # fmt: skip
def test_external_data_extent_that_cannot_hold_the_tensor_is_refused(
    tmp_path: Path, key: str, value: str
) -> None:
    """Offsets/lengths past the end, non-numbers, missing or unusable files: one clear error."""
    _save_external(_model(np.ones(64, np.float32)), tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    tensor = model.graph.initializer[0]
    entry = next((e for e in tensor.external_data if e.key == key), None) or tensor.external_data.add(key=key)
    entry.value = value
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError):
        load_model(tmp_path / "m.onnx")
