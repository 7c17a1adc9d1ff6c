"""Write DOT text, or render it with Graphviz's ``dot``, atomically."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .._io import atomic_write_bytes
from ..errors import ModelSaveError, StopGradError

__all__ = ["FORMATS", "INSTALL_HINT", "GraphvizError", "output_format", "write_picture"]

#: Output suffix -> Graphviz format (None: the DOT text itself).
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None, ".gv": None}

INSTALL_HINT = (
    "install Graphviz (Debian/Ubuntu: apt-get install -y graphviz; macOS: brew install graphviz) "
    "or write DOT text with -o graph.dot"
)

#: Seconds ``dot`` may take before we give up.
RENDER_TIMEOUT_S = 600


class GraphvizError(StopGradError):
    """Graphviz is missing or failed to render."""


def output_format(path: Path) -> str | None:
    """The Graphviz format for ``path``'s suffix; raises for suffixes we cannot write."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise GraphvizError(
            f"{path}: unknown picture format {suffix or '(none)'!r}; use .svg, .png, .pdf or .dot"
        )
    return FORMATS[suffix]


def write_picture(source: str, path: Path) -> Path:
    """Write ``source`` (DOT) to ``path`` as DOT or rendered, via a temp file and a rename."""
    fmt = output_format(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ModelSaveError(f"{path}: directory {directory} does not exist; create it first")
    if fmt is None:
        atomic_write_bytes(path, source.encode("utf-8"))
        return path
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizError(f"cannot write {path}: Graphviz's `dot` program is not on PATH; {INSTALL_HINT}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ModelSaveError(f"{path}: cannot write here ({exc.strerror}); choose another output") from exc
    os.close(fd)
    try:
        result = subprocess.run(
            [dot, f"-T{fmt}", "-o", tmp],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=RENDER_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GraphvizError(
                f"Graphviz failed to render {path} "
                f"({reason[-1] if reason else 'exit ' + str(result.returncode)}); "
                "try -o graph.dot or a smaller --max-nodes"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except subprocess.TimeoutExpired as exc:
        raise GraphvizError(
            f"Graphviz took over {RENDER_TIMEOUT_S} s on {path}; use a smaller --max-nodes"
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
