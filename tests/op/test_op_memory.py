"""A 256 MiB tensor through StopGradient: no extra copy where ORT aliases (measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")

PROBE = Path(__file__).with_name("_peak_memory_probe.py")
MIB = 1024 * 1024
TENSOR = 256 * MIB


def _peak_growths(*variants: str) -> dict[str, int]:
    """Bytes by which each variant's run raised peak RSS above the RSS just before it."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH", "")] if p)
    out = subprocess.run(
        [sys.executable, str(PROBE), *variants], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_internal_stop_gradient_adds_no_copy():
    growth = _peak_growths("copy", "bare", "stopped")
    bare, stopped, copied = growth["bare"], growth["stopped"], growth["copy"]
    # The measurement sees a copy: a stopped graph output costs one more 256 MiB buffer.
    assert copied - bare > 0.75 * TENSOR, growth
    # Aliased: the stop inside the graph costs no second buffer.
    assert stopped - bare < 0.25 * TENSOR, growth
