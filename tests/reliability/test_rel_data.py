"""Training data files (`onnx-stopgrad train --data FILE.npz`) that are corrupt.

``read_npz`` must end with the arrays or a TrainingError (one line in the CLI) for any bytes.
"""

from __future__ import annotations

import collections
import io
import random
from pathlib import Path

import numpy as np
from rel_mutate import RandomDraw, mutate_bytes

from onnx_stopgrad.errors import StopGradError


def _seeds() -> list[bytes]:
    arrays = {"x": np.arange(24, dtype=np.float32).reshape(6, 4), "y": np.arange(6)}
    seeds = []
    for save in (np.savez, np.savez_compressed):
        buffer = io.BytesIO()
        save(buffer, **arrays)
        seeds.append(buffer.getvalue())
    return seeds


def _outcomes(tmp_path: Path, cases: int) -> collections.Counter:
    from onnx_stopgrad.training._loop import read_npz

    rng = random.Random(0)
    seeds = _seeds()
    outcomes: collections.Counter = collections.Counter()
    path = tmp_path / "data.npz"
    for _ in range(cases):
        path.write_bytes(mutate_bytes(rng.choice(seeds), RandomDraw(rng)))
        try:
            read_npz(path)
            outcomes["ok"] += 1
        except StopGradError:
            outcomes["clean error"] += 1
        except Exception as exc:  # anything else reaches the user as a traceback
            outcomes[type(exc).__name__] += 1
    return outcomes


def test_intact_npz_reads_back(tmp_path: Path) -> None:
    from onnx_stopgrad.training._loop import read_npz

    path = tmp_path / "data.npz"
    path.write_bytes(_seeds()[1])
    arrays = read_npz(path)
    np.testing.assert_array_equal(arrays["x"], np.arange(24, dtype=np.float32).reshape(6, 4))


def test_corrupt_npz_gives_a_training_error(tmp_path: Path) -> None:
    """BadZipFile, zlib.error, EOFError and unknown compression all become one TrainingError."""
    outcomes = _outcomes(tmp_path, 300)
    crashes = {k: v for k, v in outcomes.items() if k not in ("ok", "clean error")}
    assert not crashes, f"of 300 corrupt files: {dict(outcomes)}"
