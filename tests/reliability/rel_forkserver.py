"""A fork server that runs the onnx-stopgrad CLI (or Python API) once per request.

Importing onnx and the package costs about half a second; forking a warm process costs
milliseconds, so fuzzing can afford hundreds of isolated runs. Each request is one JSON
line on stdin; each answer one JSON line on stdout. The child runs exactly what
``python -m onnx_stopgrad ARGS`` runs, with:

* an address-space cap (``RLIMIT_AS``: the current size plus ``mem_mb``),
* a wall-clock limit (SIGKILL after ``timeout`` seconds),
* stdout and stderr captured to files, an uncaught exception printed as a traceback
  (as the interpreter would), and
* an audit hook that records every ``open`` of a path under one of the ``watch`` paths
  (external data outside the model directory must never be opened).

The answer carries exit code, signal, time, peak RSS (from ``wait4``) and those opens.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
import traceback

import onnx  # noqa: F401  (preloaded for the children)

import onnx_stopgrad  # noqa: F401

try:
    from onnx_stopgrad.cli import main as cli_main
    from onnx_stopgrad.cli import rewrite as _rewrite  # noqa: F401

    CLI_ERROR = ""
except Exception as exc:  # the CLI may not have landed yet
    cli_main = None
    CLI_ERROR = f"{type(exc).__name__}: {exc}"


def _vm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _install_watch(watch: list[str], report_fd: int) -> None:
    roots = [os.path.realpath(p) for p in watch]

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or isinstance(args[0], int):
            return
        try:
            path = os.path.realpath(os.fsdecode(args[0]))
        except Exception:
            return
        for root in roots:
            if path == root or path.startswith(root + os.sep):
                os.write(report_fd, (json.dumps(path) + "\n").encode())

    sys.addaudithook(hook)


def _run_api(spec: dict) -> int:
    """Call the Python API as a user would; a StopGradError is the clean failure."""
    from onnx_stopgrad import insert_stop_gradient, list_stop_gradients, remove_stop_gradient
    from onnx_stopgrad._io import load_model, save_model
    from onnx_stopgrad.errors import StopGradError

    try:
        if spec["op"] == "list":
            list_stop_gradients(spec["model"])
            return 0
        if spec["op"] == "insert":
            model, _ = insert_stop_gradient(spec["model"], spec["at"])
        else:
            model, _ = remove_stop_gradient(spec["model"])
        _, source_dir = load_model(spec["model"])
        save_model(model, spec["out"], source_dir)
        return 0
    except StopGradError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _child(request: dict, out_path: str, err_path: str, watch_path: str) -> None:
    code = 1
    try:
        os.chdir(request["cwd"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        report_fd = os.open(watch_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        limit = _vm_bytes() + request.get("mem_mb", 1024) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _install_watch(request.get("watch", []), report_fd)
        if request.get("api"):
            code = _run_api(request["api"])
        else:
            try:
                cli_main(request["argv"], prog_name="onnx-stopgrad")
                code = 0
            except SystemExit as exc:
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = exc.code
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve_one(request: dict, scratch: str) -> dict:
    out_path, err_path, watch_path = (os.path.join(scratch, n) for n in ("out", "err", "watch"))
    open(watch_path, "w").close()
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(request, out_path, err_path, watch_path)
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], request.get("timeout", 30.0))
    timed_out = not ready
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    seconds = time.monotonic() - started

    def read(path: str) -> str:
        with open(path, "rb") as handle:
            return handle.read(200_000).decode("utf-8", "replace")

    with open(watch_path) as handle:
        opened = [json.loads(line) for line in handle if line.strip()]
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "seconds": seconds,
        "maxrss_kb": usage.ru_maxrss,
        "stdout": read(out_path),
        "stderr": read(err_path),
        "opened_outside": opened,
    }


def _preload_training() -> None:
    """Import the training runtime once in the parent (torch and ORT training are slow to import)."""
    try:
        import onnxruntime.training.artifacts  # noqa: F401

        import onnx_stopgrad.training  # noqa: F401
    except ImportError:
        pass


def serve() -> None:
    if "--preload-training" in sys.argv:
        _preload_training()
    print(
        json.dumps(
            {
                "ready": True,
                "cli_error": CLI_ERROR,
                "pid": os.getpid(),
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        ),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="forkserver-") as scratch:
        for line in sys.stdin:
            if not line.strip():
                continue
            answer = _serve_one(json.loads(line), scratch)
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
