"""How much `insert` at 10 tensors costs compared with onnx.load + onnx.save.

Generates a 100,000-node model (MatMul -> Add -> Relu blocks with small weights), then, in
this one process, alternates:

* baseline: ``onnx.load`` + ``onnx.save``
* insert:   ``_io.load_model`` + ``insert_in_place`` at 10 tensors + ``_io.save_model``
  (exactly what ``onnx-stopgrad insert`` does; save_model also fsyncs)

and prints the ratios of wall time, of CPU time (steadier when other processes share the
machine) and of peak memory (RSS above the phase's starting RSS, sampled every
millisecond). Goal of issue 3: ratios <= 1.5.

    python benchmarks/rewrite_speed.py [--nodes 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import psutil
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._io import load_model, save_model
from onnx_stopgrad.passes import insert_in_place


def generate(nodes: int) -> tuple[onnx.ModelProto, list[str]]:
    """A chain of MatMul/Add/Relu blocks; returns the model and 10 tensors spread over it."""
    blocks = nodes // 3
    weight = np.full((8, 8), 0.01, dtype=np.float32)
    graph_nodes, initializers, previous = [], [], "x"
    for i in range(blocks):
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        initializers.append(numpy_helper.from_array(weight[0], f"b{i}"))
        graph_nodes += [
            helper.make_node("MatMul", [previous, f"w{i}"], [f"mm{i}"], name=f"/block{i}/MatMul"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"/block{i}/Add"),
            helper.make_node("Relu", [f"add{i}"], [f"relu{i}"], name=f"/block{i}/Relu"),
        ]
        previous = f"relu{i}"
    graph = helper.make_graph(
        graph_nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    targets = [f"relu{i}" for i in np.linspace(0, blocks - 2, 10, dtype=int)]
    return model, targets


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` is the maximum above the start."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.start = self._process.memory_info().rss
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss - self.start)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss - self.start)
        self._stop.clear()


def _release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(phase: Callable[[], None]) -> tuple[float, float, int]:
    """``(wall seconds, CPU seconds of this process, peak RSS increase in bytes)``."""
    _release_memory()
    with PeakRSS() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        phase()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return elapsed, cpu, rss.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.onnx"
        model, targets = generate(args.nodes)
        onnx.save(model, source)
        del model
        print(
            f"model: {args.nodes} nodes, {source.stat().st_size / 1e6:.1f} MB; "
            f"inserting at {len(targets)} tensors"
        )

        def baseline() -> None:
            onnx.save(onnx.load(str(source)), str(Path(tmp) / "baseline.onnx"))

        steps: dict[str, float] = {}

        def insert() -> None:
            start = time.perf_counter()
            proto, directory = load_model(source)
            loaded = time.perf_counter()
            report = insert_in_place(proto, targets)
            inserted = time.perf_counter()
            assert len(report.inserted) == len(targets)
            save_model(proto, Path(tmp) / "stopped.onnx", directory)
            steps.update(load=loaded - start, insert=inserted - loaded, save=time.perf_counter() - inserted)

        results: dict[str, list[tuple[float, float, int]]] = {"baseline": [], "insert": []}
        measure(baseline)  # warm-up: imports, page cache
        for _ in range(args.repeat):
            for name, phase in (("baseline", baseline), ("insert", insert)):
                results[name].append(measure(phase))

    wall = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
    peaks = {k: statistics.median(r[2] for r in v) for k, v in results.items()}
    labels = {"baseline": "onnx.load + onnx.save", "insert": "load_model + insert (10 tensors) + save_model"}
    print(f"\n# rewrite_speed: {args.nodes:,} nodes, median of {args.repeat}\n")
    print("| run | wall (s) | CPU (s) | peak RSS above start (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for name in results:
        print(f"| {labels[name]} | {wall[name]:.3f} | {cpu[name]:.3f} | {peaks[name] / 2**20:.0f} |")
    ratios = [
        wall["insert"] / wall["baseline"],
        cpu["insert"] / cpu["baseline"],
        peaks["insert"] / max(peaks["baseline"], 1),
    ]
    print("| **ratio** (goal <= 1.5x) | " + " | ".join(f"**{r:.2f}x**" for r in ratios) + " |")
    print("\nCPU time is the steadier figure on a shared machine; wall time includes save_model's fsync.")
    print("\nlast insert run: " + ", ".join(f"{k} {v:.3f} s" for k, v in steps.items()))


if __name__ == "__main__":
    main()
