"""benchmarks/run_all.py: discovery, the report's layout, failures reported (no benchmark is run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run_all = _load()


def test_discovers_every_benchmark_but_itself() -> None:
    names = [p.stem for p in run_all.discover()]
    assert "run_all" not in names
    assert names == sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "run_all")


def test_unknown_name_is_one_clear_error() -> None:
    with pytest.raises(SystemExit, match="no benchmark named nope"):
        run_all.discover(["nope"])


def test_report_keeps_tables_and_wraps_text(tmp_path: Path) -> None:
    stdout = "intro line\n| a | b |\n|---|---|\n| 1 | 2 |\n### detail\nafter\n"
    ok = run_all.ScriptResult("alpha", "python benchmarks/alpha.py", 0, 1.2, stdout, "")
    bad = run_all.ScriptResult(
        "beta", "python benchmarks/beta.py", 2, 0.1, "", "Traceback\nValueError: boom\n"
    )
    text = run_all.to_markdown([ok, bad], ["- machine: test"], "benchmarks/run_all.py")
    assert "| alpha | ok | 1 |" in text and "| beta | FAILED (exit 2) | 0 |" in text
    assert "```\nintro line\n```" in text
    assert "\n| a | b |\n|---|---|\n| 1 | 2 |\n" in text
    assert "### detail" in text and "```\nafter\n```" in text
    assert "ValueError: boom" in text


def test_machine_lines_name_cpu_memory_and_versions() -> None:
    text = "\n".join(run_all.machine_lines())
    for needle in ("machine:", "logical cores", "RAM", "python ", "onnx ", "commit:"):
        assert needle in text


def test_a_failing_script_fails_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "broken.py"
    script.write_text("print('| x |')\nraise SystemExit(3)\n")
    monkeypatch.setattr(run_all, "discover", lambda only=None: [script])
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    output = tmp_path / "RESULTS.md"
    assert run_all.main(["--output", str(output)]) == 1
    assert "FAILED (exit 3)" in output.read_text()
