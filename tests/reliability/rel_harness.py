"""Run the CLI on a prepared case and judge the outcome.

A run is *clean* when it ends in one of two ways:

* exit 0 and, for a command that writes, an output that onnx.checker accepts;
* exit 1 and exactly one line on stderr, starting with ``error:``, and nothing written.

Always: no traceback, no signal, no timeout, the input files byte-identical, nothing
outside the case directory opened or changed, no temporary files left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from rel_mutate import OUTSIDE_NAME

__all__ = [
    "REPO",
    "Case",
    "ForkServer",
    "RunResult",
    "Tally",
    "cli_ready",
    "judge",
    "prepare_case",
    "run_real_cli",
]

REPO = Path(__file__).resolve().parents[2]
_SERVER = Path(__file__).with_name("rel_forkserver.py")


@dataclass
class RunResult:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    maxrss_kb: int = 0
    opened_outside: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(_SERVER.parent), env.get("PYTHONPATH")]))
    env.pop("ONNX_STOPGRAD_LARGE_TESTS", None)
    return env


class ForkServer:
    """Client of rel_forkserver.py: one warm process, one fork per run."""

    def __init__(self, preload_training: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(_SERVER), *(["--preload-training"] if preload_training else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=str(REPO),
        )
        hello = json.loads(self.proc.stdout.readline())
        self.cli_error: str = hello["cli_error"]
        self.base_rss_kb: int = hello["rss_kb"]

    def run(
        self,
        argv: list[str],
        cwd: Path,
        *,
        timeout: float = 30.0,
        mem_mb: int = 1024,
        watch: list[Path] = (),
        api: dict | None = None,
    ) -> RunResult:
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "timeout": timeout,
            "mem_mb": mem_mb,
            "watch": [str(p) for p in watch],
            "api": api,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        answer = json.loads(line)
        return RunResult(**answer)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def cli_ready() -> str:
    """Empty when the rewrite CLI is importable, else why not."""
    try:
        import onnx_stopgrad.cli.rewrite  # noqa: F401
    except Exception as exc:
        return f"rewrite CLI not available yet ({type(exc).__name__}: {exc})"
    return ""


def run_real_cli(argv: list[str], cwd: Path, *, timeout: float = 60.0, mem_mb: int = 3072) -> RunResult:
    """``python -m onnx_stopgrad ARGV`` in a subprocess with a time and address-space cap."""
    import time

    def cap() -> None:
        limit = mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "onnx_stopgrad", *argv],
            cwd=str(cwd),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=cap,
        )
    except subprocess.TimeoutExpired as exc:
        return RunResult(-9, exc.stdout or "", exc.stderr or "", timeout, timed_out=True)
    return RunResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): _digest(p) for p in sorted(directory.rglob("*")) if not p.is_dir()}


def _sentinel_state(path: Path) -> tuple[str, int]:
    return _digest(path), path.stat().st_atime_ns


@dataclass
class Case:
    """A case directory: the model, its sidecar files, sentinels outside, an ``out`` dir."""

    root: Path
    directory: Path
    model: Path
    out_dir: Path
    before: dict[str, str]
    sentinels: dict[Path, tuple[str, int]]

    @property
    def watch(self) -> list[Path]:
        return list(self.sentinels)


def _plant_sentinel(path: Path) -> None:
    if not path.exists():
        path.write_bytes(b"SENTINEL: must never be read or written by onnx-stopgrad\n" * 8)
    # relatime updates atime on a read only while atime <= mtime: make a read visible.
    stat = path.stat()
    os.utime(path, ns=(stat.st_mtime_ns - 10**9, stat.st_mtime_ns))


def prepare_case(root: Path, name: str, model_bytes: bytes, sidecars: dict[str, bytes]) -> Case:
    """``root/cases/<name>/model.onnx`` with sidecars; sentinels at ``root`` and ``root/cases``.

    ``link_outside.bin`` in the case directory is a symlink to a sentinel outside it.
    """
    cases = root / "cases"
    directory = cases / name
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "out").mkdir(parents=True)
    sentinels = [root / OUTSIDE_NAME, cases / OUTSIDE_NAME]
    for sentinel in sentinels:
        _plant_sentinel(sentinel)
    model = directory / "model.onnx"
    model.write_bytes(model_bytes)
    for file_name, data in sidecars.items():
        (directory / file_name).write_bytes(data)
    (directory / "link_outside.bin").symlink_to(root / OUTSIDE_NAME)
    return Case(
        root,
        directory,
        model,
        directory / "out",
        _snapshot(directory),
        {s: _sentinel_state(s) for s in sentinels},
    )


def _checker_error(path: Path) -> str:
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the checker raises several types
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ""


def judge(
    result: RunResult, case: Case, output: Path | None, *, onnx_output: bool = True
) -> tuple[list[str], list[str]]:
    """``(violations, notes)`` for one run; ``output`` is where a writing command writes.

    A note is a finding that is not a crash: an output written from an input that
    onnx.checker rejects too, for the same reason (accepted with a warning).
    """
    bad: list[str] = []
    notes: list[str] = []
    err = result.stderr
    if result.timed_out:
        bad.append(f"hang: no exit after {result.seconds:.1f}s")
    elif result.rc < 0:
        bad.append(f"killed by signal {-result.rc}")
    if "Traceback" in err:
        frames = re.findall(r'File "[^"]*/(onnx_stopgrad/[^"]+)", line (\d+), in (\w+)', err)
        where = " at {}:{} in {}".format(*frames[-1]) if frames else ""
        bad.append("traceback: " + err.strip().splitlines()[-1][:300] + where)
    if result.rc not in (0, 1) and not result.timed_out:
        bad.append(f"exit code {result.rc}")
    if result.rc == 1:
        lines = err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            bad.append(f"error output is not one 'error:' line: {err.strip()[:300]!r}")
    if result.opened_outside:
        bad.append(f"opened outside the model directory: {result.opened_outside[:3]}")
    for sentinel, state in case.sentinels.items():
        if _sentinel_state(sentinel) != state:
            bad.append(f"sentinel outside the model directory read or changed: {sentinel}")
    after = _snapshot(case.directory)
    for rel, digest in case.before.items():
        if after.get(rel) != digest:
            bad.append(f"input file changed or removed: {rel}")
    new = sorted(set(after) - set(case.before))
    expected_new = set()
    if output is not None and result.rc == 0:
        if not output.exists():
            bad.append("exit 0 but no output written")
        else:
            expected_new = {str(p.relative_to(case.directory)) for p in output.parent.iterdir()}
            problem = _checker_error(output) if onnx_output else ""
            if problem:
                source_problem = _checker_error(case.model)
                if source_problem == problem:  # accepted with a warning; no new problem
                    notes.append(f"output fails onnx.checker, as does the input: {problem[:200]}")
                elif source_problem:
                    bad.append(
                        f"output fails onnx.checker in a new way: {problem[:200]} "
                        f"(input: {source_problem[:200]})"
                    )
                else:
                    bad.append(f"valid input gave an output onnx.checker rejects: {problem[:200]}")
    stray = [p for p in new if p not in expected_new or p.endswith(".tmp")]
    if stray:
        bad.append(f"files left behind: {stray[:5]}")
    return bad, notes


@dataclass
class Tally:
    """Counts for a fuzzing run, printed into the report."""

    cases: int = 0
    clean_ok: int = 0
    clean_error: int = 0
    crashes: int = 0
    data_lost: int = 0
    notes: int = 0
    max_seconds: float = 0.0
    max_rss_kb: int = 0
    kinds: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def add(self, label: str, result: RunResult, bad: list[str], notes: list[str]) -> None:
        self.cases += 1
        self.max_seconds = max(self.max_seconds, result.seconds)
        self.max_rss_kb = max(self.max_rss_kb, result.maxrss_kb)
        self.notes += bool(notes)
        if bad:
            self.crashes += 1
            self.data_lost += any("input file changed" in b or "sentinel" in b for b in bad)
            self.failures.append(f"{label}: {'; '.join(bad)}")
        elif result.rc == 0:
            self.clean_ok += 1
        else:
            self.clean_error += 1
            self.kinds[result.stderr.split(":", 2)[1].strip()[:40] if ":" in result.stderr else "?"] += 1

    def summary(self) -> str:
        return (
            f"cases={self.cases} ok={self.clean_ok} clean_errors={self.clean_error} "
            f"crashes={self.crashes} data_lost={self.data_lost} garbage_through={self.notes} "
            f"max_seconds={self.max_seconds:.2f} max_rss_mb={self.max_rss_kb / 1024:.0f}"
        )


# --- one fuzz case, shared by the tests and scripts/fuzz_campaign.py ---------------------

COMMAND_KINDS = (
    "insert",
    "insert_consumer",
    "list",
    "remove",
    "remove_identity",
    "api_insert",
    "api_list",
    "analyze",
    "show",
)


def fuzz_one(
    server: ForkServer,
    root: Path,
    name: str,
    seed_files: dict[str, bytes],
    targets: tuple[str, ...],
    draw,
    *,
    structured: bool,
    timeout: float = 20.0,
    mem_mb: int = 1024,
    kinds: tuple[str, ...] = COMMAND_KINDS,
) -> tuple[str, RunResult, list[str], list[str]]:
    """Mutate one seed, run one command on it, judge it: ``(label, result, bad, notes)``."""
    from rel_mutate import mutate_bytes, mutate_model

    files = dict(seed_files)
    model_bytes = files.pop("model.onnx")
    if structured:
        proto = onnx.ModelProto.FromString(model_bytes)
        try:
            how = "+".join(mutate_model(proto, draw))
            model_bytes = proto.SerializeToString()
        except Exception:  # protobuf refused the mutation (e.g. copying a too-deep node)
            how = "mutation-refused"
    else:
        model_bytes = mutate_bytes(model_bytes, draw)
        how = "bytes"
    case = prepare_case(root, name, model_bytes, files)
    kind = draw.choice(kinds)
    target = draw.choice(targets)
    out = draw.choice(
        (
            case.out_dir / "out.onnx",
            case.directory / "out.onnx",
            case.out_dir / "out.onnx",
            case.directory / "weights.bin",
            case.directory / "model.onnx",
        )
    )
    argv = {
        "insert": ["insert", "model.onnx", "--at", target, "-o", str(out)],
        "insert_consumer": [
            "insert",
            "model.onnx",
            "--at",
            target,
            "--consumer",
            "mm2",
            "-o",
            str(out),
            "--json",
        ],
        "list": ["list", "model.onnx", "--json"],
        "remove": ["remove", "model.onnx", "-o", str(out)],
        "remove_identity": ["remove", "model.onnx", "--to-identity", "-o", str(out)],
        "analyze": ["analyze", "model.onnx", "--at", target, "--static", "--json"],
        "show": ["show", "model.onnx", "--at", target, "-o", str(out.with_suffix(".dot"))],
        "artifacts": ["artifacts", "model.onnx", "-o", str(out.with_suffix("")), "--loss", "mse"],
    }.get(kind, [])
    api = None
    if kind.startswith("api_"):
        if (
            out == case.model
        ):  # save_model is the API's low-level writer: over the input is the caller's choice
            out = case.out_dir / "out.onnx"
        api = {"op": kind[4:], "model": str(case.model), "at": [target], "out": str(out)}
    result = server.run(argv, case.directory, timeout=timeout, mem_mb=mem_mb, watch=case.watch, api=api)
    written = {
        "list": None,
        "api_list": None,
        "analyze": None,
        "show": out.with_suffix(".dot"),
        "artifacts": out.with_suffix("") / "training_model.onnx",
    }.get(kind, out)
    bad, notes = judge(result, case, written, onnx_output=kind != "show")
    if not bad:
        shutil.rmtree(case.directory, ignore_errors=True)
    return f"{name} {how} {kind} --at {target!r}", result, bad, notes
