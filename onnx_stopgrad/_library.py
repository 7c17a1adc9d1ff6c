"""Where the StopGradient op library is, and ONNX Runtime session options that load it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._names import MIN_ORT_VERSION
from .errors import LibraryError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["LIBRARY_FILE", "check_runtime_version", "get_library_path", "session_options"]

_log = logging.getLogger(__name__)

#: File name of the op library inside the package's ``_lib`` folder (as setup.py names it).
LIBRARY_FILE = {"win32": "onnx_stopgrad.dll", "darwin": "libonnx_stopgrad.dylib"}.get(
    sys.platform, "libonnx_stopgrad.so"
)

# Session config entry that marks options which already have the library: ORT refuses a
# session whose options register the same domain twice ("Domain already set in registry").
_REGISTERED_KEY = "onnx_stopgrad.library_registered"


def get_library_path() -> str:
    """Absolute path of the built op library (pass it to ``register_custom_ops_library``)."""
    path = Path(__file__).resolve().parent / "_lib" / LIBRARY_FILE
    if not path.is_file():
        raise LibraryError(
            f"the StopGradient op library is missing ({path}): run `make build` or `pip install .`"
        )
    return str(path)


def _version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric parts of a version string: "1.19.2" -> (1, 19, 2), "1.20.0rc1" -> (1, 20)."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def check_runtime_version(version: str) -> None:
    """Raise LibraryError when an ONNX Runtime ``version`` is older than MIN_ORT_VERSION."""
    if _version_tuple(version) < _version_tuple(MIN_ORT_VERSION):
        raise LibraryError(
            f"onnxruntime {version} is too old for the StopGradient op (needs >= {MIN_ORT_VERSION}): "
            "upgrade onnxruntime"
        )


def _already_registered(options: onnxruntime.SessionOptions) -> bool:
    try:
        return bool(options.get_session_config_entry(_REGISTERED_KEY))
    except RuntimeError:  # ORT raises when the key is absent
        return False


def session_options(options: onnxruntime.SessionOptions | None = None) -> onnxruntime.SessionOptions:
    """Return ``options`` (or new SessionOptions) with the StopGradient library registered.

    Calling it again on the same options does nothing.
    """
    try:
        import onnxruntime
    except ImportError as exc:
        raise LibraryError(
            f"onnxruntime is not installed ({exc}): pip install 'onnx-stopgrad[cpu]' "
            "(or [gpu], or [training] for ONNX Runtime training)"
        ) from exc

    check_runtime_version(onnxruntime.__version__)
    path = get_library_path()
    if options is None:
        options = onnxruntime.SessionOptions()
    elif _already_registered(options):
        return options
    try:
        options.register_custom_ops_library(path)
    except Exception as exc:  # ORT raises its own Fail/RuntimeError types
        raise LibraryError(f"onnxruntime could not load the StopGradient op library {path}: {exc}") from exc
    options.add_session_config_entry(_REGISTERED_KEY, "1")
    _log.debug("registered %s with onnxruntime %s", path, onnxruntime.__version__)
    return options
