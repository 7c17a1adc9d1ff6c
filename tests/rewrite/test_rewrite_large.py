"""A model with more than 2 GB of external data is rewritten without reading its weights."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from rewrite_cases import StopGradient

from onnx_stopgrad.cli import main

psutil = pytest.importorskip("psutil")

ROWS, COLS = 150_000_000, 4  # float32: 2.4 GB
DATA_BYTES = ROWS * COLS * 4


def _large_model(directory: Path) -> Path:
    """Embedding table W (2.4 GB, sparse file of zeros) -> Gather -> Mul -> Relu."""
    table = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[ROWS, COLS])
    table.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(DATA_BYTES))):
        table.external_data.add(key=key, value=value)
    with open(directory / "weights.bin", "wb") as handle:
        handle.truncate(DATA_BYTES)  # sparse: instant, takes no disk blocks
        handle.seek(DATA_BYTES - 16)
        handle.write(np.arange(4, dtype=np.float32).tobytes())  # last row: 0, 1, 2, 3
    index = numpy_helper.from_array(np.array([0, ROWS - 1], dtype=np.int64), "idx")
    nodes = [
        helper.make_node("Gather", ["W", "idx"], ["rows"], name="embed"),
        helper.make_node("Mul", ["rows", "x"], ["h"], name="scale"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, COLS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, COLS])],
        [table, index],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    path = directory / "large.onnx"
    path.write_bytes(model.SerializeToString())
    return path


class _PeakRSS:
    def __enter__(self):
        self._proc, self._done, self.peak = psutil.Process(), threading.Event(), 0
        self._start = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss - self._start)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


@pytest.fixture()
def large_dir(tmp_path: Path):
    yield tmp_path
    for data in tmp_path.rglob("weights.bin"):  # pytest keeps old tmp dirs: free the disk now
        data.unlink()


@pytest.mark.large
def test_over_2gb_of_external_data(large_dir: Path):
    tmp_path = large_dir
    path = _large_model(tmp_path)
    runner = CliRunner()
    with _PeakRSS() as rss:
        result = runner.invoke(main, ["insert", str(path), "--at", "W", "--at", "h"])
    assert result.exit_code == 0, result.output
    assert rss.peak < 300 * 2**20, f"RSS grew by {rss.peak / 2**20:.0f} MiB: weights were read"
    out = tmp_path / "large.stopgrad.onnx"
    assert out.stat().st_size < 10_000 and sorted(p.name for p in tmp_path.iterdir()) == [
        "large.onnx",
        "large.stopgrad.onnx",
        "weights.bin",
    ]  # same folder: references the same data, nothing copied
    stopped = onnx.load(str(out), load_external_data=False)
    onnx.checker.check_model(str(out), full_check=True, check_custom_domain=True)
    assert [n.op_type for n in stopped.graph.node] == [
        "StopGradient",
        "Gather",
        "Mul",
        "StopGradient",
        "Relu",
    ]
    (table,) = [t for t in stopped.graph.initializer if t.name == "W"]
    assert {e.key: e.value for e in table.external_data}["location"] == "weights.bin"

    # Numerics through the reference evaluator: the rows read from disk are right.
    from onnx.reference import ReferenceEvaluator

    x = np.full((2, COLS), 2.0, dtype=np.float32)
    if os.environ.get("ONNX_STOPGRAD_LARGE_NUMERICS") == "1":  # needs 2.4 GB of RAM
        got = ReferenceEvaluator(str(out), new_ops=[StopGradient]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, [[0, 0, 0, 0], [0, 2, 4, 6]])

    # Another folder: the data file is copied (streamed by the OS) so the output stands alone.
    other = tmp_path / "copy"
    other.mkdir()
    with _PeakRSS() as rss:
        result = runner.invoke(main, ["remove", str(out), "-o", str(other / "plain.onnx")])
    assert result.exit_code == 0, result.output
    assert rss.peak < 300 * 2**20
    assert (other / "weights.bin").stat().st_size == DATA_BYTES
    with open(other / "weights.bin", "rb") as handle:
        handle.seek(DATA_BYTES - 16)
        assert np.frombuffer(handle.read(), dtype=np.float32).tolist() == [0, 1, 2, 3]
