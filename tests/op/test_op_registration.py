"""Registering the library many times: one domain per process, no growth, thread-safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto
from op_helpers import chain_model

import onnx_stopgrad

pytest.importorskip("psutil")

PROBE = Path(__file__).with_name("_registration_probe.py")


def _probe(cycles: int, registrations: int) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH", "")] if p)
    out = subprocess.run(
        [sys.executable, str(PROBE), str(cycles), str(registrations)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def figures() -> dict:
    return _probe(cycles=400, registrations=10_000)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_fresh_options_per_session_keep_rss_flat_and_the_library_loaded(figures):
    """ORT unloads the library with the last options/session holding it; it must stay (-z nodelete).

    Before the fix every cycle reloaded the library and kept ~70 KB (the static C++ and
    CUDA runtimes' start-up allocations).
    """
    assert figures["mismatches"] == 0
    assert figures["still_mapped"], figures
    assert figures["kb_per_cycle"] < 2, figures


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_registering_again_allocates_nothing_new(figures):
    """One domain per process: before the fix each registration kept a new one (~215 bytes)."""
    assert figures["bytes_per_registration"] - figures["bytes_per_options_control"] < 32, figures


def test_concurrent_registration_from_many_threads(ort):
    model = chain_model(TensorProto.FLOAT, 3)
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def register_and_run(seed: int) -> None:
        barrier.wait()
        try:
            for _ in range(5):
                options = onnx_stopgrad.session_options()
                session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
                x = np.random.default_rng(seed).standard_normal(7).astype(np.float32)
                if session.run(None, {"x": x})[0].tobytes() != x.tobytes():
                    errors.append(f"thread {seed}: output differs from input")
        except Exception as exc:
            errors.append(f"thread {seed}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=register_and_run, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
