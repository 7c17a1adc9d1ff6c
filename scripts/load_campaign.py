"""Load campaign for the StopGradient op library under ONNX Runtime (CPU).

1. One InferenceSession with the library, ``--threads`` threads running it concurrently for
   ``--runs`` runs in total: every output must equal its input; RSS is sampled after
   warm-up (the first 10% of runs) and at the end.
2. ``--cycles`` InferenceSessions created and destroyed in this one process, all with one
   ``session_options()`` (``--fresh-options``: the library registered anew for each):
   RSS after the first 10% of cycles and at the end.

Prints the figures (``--json`` for a machine-readable line). Exit status 1 when an output
differed, a thread failed, or RSS grew more than ``--max-growth-mb`` after warm-up.

    python scripts/load_campaign.py                       # 10,000 runs x 16 threads, 1,000 cycles
    python scripts/load_campaign.py --runs 100000 --cycles 10000
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import psutil
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort

from onnx_stopgrad import session_options
from onnx_stopgrad._names import DOMAIN, OP_TYPE, OPSET_VERSION

__all__ = ["main", "session_cycles", "threaded_runs"]

_SHAPES = [(1,), (0,), (), (3, 5), (64, 64), (2, 3, 4), (1000,), (16, 0, 2)]


def _model() -> bytes:
    """x -> StopGradient -> StopGradient -> y: one aliased stop and one that is a graph output."""
    graph = helper.make_graph(
        [
            helper.make_node(OP_TYPE, ["x"], ["s"], domain=DOMAIN, name="sg_inner"),
            helper.make_node(OP_TYPE, ["s"], ["y"], domain=DOMAIN, name="sg_out"),
        ],
        "load",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    )
    model.ir_version = 10
    return model.SerializeToString()


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def threaded_runs(runs: int = 10_000, threads: int = 16) -> dict:
    """``runs`` runs of one session from ``threads`` threads; outputs compared bit for bit."""
    session = ort.InferenceSession(_model(), session_options(), providers=["CPUExecutionProvider"])
    inputs = [np.random.default_rng(i).standard_normal(s).astype(np.float32) for i, s in enumerate(_SHAPES)]
    counter = iter(range(runs))
    lock = threading.Lock()
    warm_at = max(runs // 10, 1)
    figures = {"runs": 0, "mismatches": 0, "errors": [], "rss_warm_mb": None}

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            x = np.asarray(inputs[index % len(inputs)] + np.float32(index))  # unique per run: mix-ups show
            try:
                y = session.run(None, {"x": x})[0]
                ok = y.shape == x.shape and y.dtype == x.dtype and y.tobytes() == x.tobytes()
            except Exception as exc:  # counted and reported, never hidden
                with lock:
                    figures["errors"].append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                figures["runs"] += 1
                figures["mismatches"] += not ok
                if figures["runs"] == warm_at:
                    figures["rss_warm_mb"] = _rss_mb()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    figures["seconds"] = time.perf_counter() - started
    figures["rss_end_mb"] = _rss_mb()
    figures["threads"] = threads
    figures["runs_per_second"] = figures["runs"] / figures["seconds"]
    figures["rss_growth_after_warmup_mb"] = figures["rss_end_mb"] - (figures["rss_warm_mb"] or 0)
    return figures


def session_cycles(cycles: int = 1_000, fresh_options: bool = False) -> dict:
    """Create and destroy ``cycles`` sessions with the library; RSS after warm-up and at the end.

    By default every session shares one ``session_options()``; ``fresh_options`` registers
    the library on new SessionOptions for every session, so the library is unloaded and
    loaded again each cycle (the last SessionOptions holding it is gone).
    """
    model = _model()
    shared = None if fresh_options else session_options()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    warm_at = max(cycles // 10, 1)
    rss_warm = None
    mismatches = 0
    started = time.perf_counter()
    for index in range(1, cycles + 1):
        options = session_options() if fresh_options else shared
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        mismatches += session.run(None, {"x": x})[0].tobytes() != x.tobytes()
        del session, options  # fresh options: the library is unloaded here, loaded again next
        if index == warm_at:
            gc.collect()
            rss_warm = _rss_mb()
    gc.collect()
    rss_end = _rss_mb()
    return {
        "cycles": cycles,
        "fresh_options": fresh_options,
        "mismatches": mismatches,
        "seconds": time.perf_counter() - started,
        "rss_warm_mb": rss_warm,
        "rss_end_mb": rss_end,
        "rss_growth_after_warmup_mb": rss_end - rss_warm,
        "kb_per_cycle_after_warmup": (rss_end - rss_warm) * 1024 / max(cycles - warm_at, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--cycles", type=int, default=1_000)
    parser.add_argument(
        "--fresh-options",
        action="store_true",
        help="register the library on new SessionOptions for every session",
    )
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    parser.add_argument(
        "--library",
        type=Path,
        default=None,
        help="use this build of libonnx_stopgrad.so (e.g. to check a fix)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.library is not None:
        import onnx_stopgrad._library as library

        library.get_library_path = lambda: str(args.library.resolve())
    onnx.checker  # noqa: B018  (onnx imported for the model helpers)
    figures = {"onnxruntime": ort.__version__, "rss_start_mb": _rss_mb()}
    if args.runs:
        figures["threaded"] = threaded_runs(args.runs, args.threads)
    if args.cycles:
        figures["sessions"] = session_cycles(args.cycles, args.fresh_options)
    if args.json:
        print(json.dumps(figures))
    else:
        for part in ("threaded", "sessions"):
            if part in figures:
                print(part + ":")
                for key, value in figures[part].items():
                    print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: {value}")
    failed = False
    for part in ("threaded", "sessions"):
        result = figures.get(part)
        if result and (
            result["mismatches"]
            or result.get("errors")
            or result["rss_growth_after_warmup_mb"] > args.max_growth_mb
        ):
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
