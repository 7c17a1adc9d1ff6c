"""Run every benchmark script in benchmarks/ and write one markdown report.

    .venv/bin/python benchmarks/run_all.py            # or: make bench
    .venv/bin/python benchmarks/run_all.py --only op_latency --output /tmp/r.md

Each script runs in its own process (so one's memory cannot skew another's), with the
same Python, one after the other, each with its default arguments; inference-only scripts
(``op_latency``) run a second time in ``.venv-ort131`` (onnxruntime-gpu 1.31) when it
exists. Scripts print their own medians and ratios; this collects them under one header
naming the machine (CPU model, cores, RAM), the versions (Python, onnx, onnxruntime,
torch, numpy, onnx-stopgrad) and the git commit. Output convention for a script:
markdown tables (``|`` lines) and ``#`` headings pass through as markdown; every other
line is kept verbatim in a code block. A script that fails is reported as failed (with
the end of its stderr) and makes this command exit 1; the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
#: Scripts that need only inference; also run in the inference runtime's venv when it exists.
INFERENCE_ONLY = ("op_latency",)
INFERENCE_PYTHON = REPO / ".venv-ort131" / "bin" / "python"
PACKAGES = ("onnx", "onnxruntime-training-cpu", "onnxruntime-training", "onnxruntime", "torch", "numpy",
            "onnx-stopgrad")  # fmt: skip

__all__ = ["ScriptResult", "discover", "machine_lines", "main", "run_script", "to_markdown"]


@dataclass(frozen=True)
class ScriptResult:
    """One benchmark script's run."""

    name: str
    command: str
    returncode: int
    seconds: float
    stdout: str
    stderr: str


def discover(only: list[str] | None = None) -> list[Path]:
    """Benchmark scripts: every ``benchmarks/*.py`` except this one and private modules."""
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if only:
        wanted = {name.removesuffix(".py") for name in only}
        unknown = wanted - {p.stem for p in scripts}
        if unknown:
            names = ", ".join(p.stem for p in scripts)
            raise SystemExit(f"error: no benchmark named {', '.join(sorted(unknown))}; choose from {names}")
        scripts = [p for p in scripts if p.stem in wanted]
    return scripts


def run_script(
    script: Path, timeout: float, python: Path | None = None, label: str | None = None
) -> ScriptResult:
    """Run ``script`` (with ``python``, default this one) from the repository root; echo its output."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    python = python or Path(sys.executable)
    command = f"{_shown(python)} {script.relative_to(REPO)}"
    print(f"== {command}", flush=True)
    start = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(
        [str(python), str(script)], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(f"   {line}", end="", flush=True)
                lines.append(line)
                if time.perf_counter() - start > timeout:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
            stderr = proc.stderr.read() if proc.stderr else ""
            returncode = proc.wait()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stderr, returncode = f"timed out after {timeout:.0f} s", -9
    elapsed = time.perf_counter() - start
    return ScriptResult(label or script.stem, command, returncode, elapsed, "".join(lines), stderr)


def _shown(python: Path) -> str:
    """``.venv/bin/python`` for a venv inside the repository, else the path as given."""
    try:
        return str(python.relative_to(REPO))
    except ValueError:
        return str(python)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        import psutil

        return f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return f"{pages * size / 2**30:.1f} GiB"


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        measured = ["onnx_stopgrad", "custom_ops", "benchmarks", ":!benchmarks/RESULTS.md"]
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", *measured]
        dirty = subprocess.run(status, cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
        return commit + (" (with uncommitted changes to the code measured)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_lines() -> list[str]:
    """Markdown bullet lines: date, machine, versions, commit."""
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    versions = [f"python {platform.python_version()}"]
    versions += [f"{name} {v}" for name in PACKAGES if (v := _version(name))]
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        (
            f"- machine: {_cpu_model()}, {os.cpu_count()} logical cores, {_memory_gib()} RAM, "
            f"{platform.system()} {platform.release()}"
        ),
        f"- load average when started (1, 5, 15 min): {load}",
        f"- versions: {', '.join(versions)}",
        f"- commit: {_git_commit()}",
    ]


def _script_markdown(stdout: str) -> list[str]:
    """Tables and headings as markdown, other lines in code blocks."""
    out: list[str] = []
    text: list[str] = []

    def flush_text() -> None:
        if text:
            out.extend(["", "```", *text, "```", ""])
            text.clear()

    previous = ""
    for raw in stdout.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("|"):
            flush_text()
            if not previous.lstrip().startswith("|"):
                out.append("")
            out.append(line.strip())
        elif line.startswith("#"):
            flush_text()
            out.extend(["", "### " + line.lstrip("#").strip(), ""])  # under the script's "##"
        elif line.strip():
            text.append(line)
        previous = line
    flush_text()
    return out


def to_markdown(results: list[ScriptResult], header: list[str], command: str) -> str:
    """The whole report."""
    intro = (
        f"Written by `{command}`. Every number below is from one run on the machine described here; "
        "ratios are measured within one process."
    )
    lines = [
        "# Benchmark results",
        "",
        intro,
        "",
        *header,
        "",
        "| script | status | wall time (s) |",
        "|---|---|---:|",
    ]
    for r in results:
        status = "ok" if r.returncode == 0 else f"FAILED (exit {r.returncode})"
        lines.append(f"| {r.name} | {status} | {r.seconds:.0f} |")
    for r in results:
        lines.extend(["", f"## {r.name}", "", f"`{r.command}`"])
        lines.extend(_script_markdown(r.stdout))
        if r.returncode != 0:
            tail = r.stderr.strip().splitlines()[-15:]
            lines.extend(
                ["", f"**Failed with exit status {r.returncode}.** End of stderr:", "", "```", *tail, "```"]
            )
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (e.g. op_latency)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per script")
    args = parser.parse_args(argv)
    scripts = discover(args.only)
    header = machine_lines()
    print("\n".join(header), flush=True)
    results = []
    for script in scripts:
        results.append(run_script(script, args.timeout))
        if script.stem in INFERENCE_ONLY and INFERENCE_PYTHON.exists():
            label = f"{script.stem} (inference runtime, {_shown(INFERENCE_PYTHON)})"
            results.append(run_script(script, args.timeout, INFERENCE_PYTHON, label))
    command = "benchmarks/run_all.py" + (f" --only {' '.join(args.only)}" if args.only else "")
    _write_atomically(args.output, to_markdown(results, header, command))
    failed = [r.name for r in results if r.returncode != 0]
    print(f"\nwrote {args.output}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
