"""Load: 16 threads x 10,000 runs of one session; 1,000 session create/destroy cycles.

Each phase runs scripts/load_campaign.py in a fresh process (so pytest's own memory does
not blur the RSS figures) and checks its JSON figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rel_harness import REPO, _env

pytest.importorskip("onnxruntime")
pytest.importorskip("psutil")


def _campaign(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "load_campaign.py"), "--json", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.large
def test_sixteen_threads_ten_thousand_runs_outputs_equal_inputs_rss_flat() -> None:
    figures = _campaign("--runs", "10000", "--threads", "16", "--cycles", "0")["threaded"]
    print(f"\nthreaded: {figures}")
    assert figures["runs"] == 10_000 and not figures["errors"]
    assert figures["mismatches"] == 0
    assert figures["rss_growth_after_warmup_mb"] < 10


@pytest.mark.large
def test_thousand_sessions_created_and_destroyed_rss_flat() -> None:
    """With one ``session_options()`` shared by the sessions (the documented use)."""
    figures = _campaign("--runs", "0", "--cycles", "1000")["sessions"]
    print(f"\nsessions: {figures}")
    assert figures["mismatches"] == 0
    assert figures["kb_per_cycle_after_warmup"] < 2, figures


@pytest.mark.large
def test_thousand_sessions_each_with_fresh_options_rss_flat() -> None:
    figures = _campaign("--runs", "0", "--cycles", "1000", "--fresh-options")["sessions"]
    print(f"\nsessions, fresh options: {figures}")
    assert figures["mismatches"] == 0
    assert figures["kb_per_cycle_after_warmup"] < 2, figures
