"""Build artifacts in a hidden folder beside the target, then move them in.

A failure part-way leaves the target as it was, or (when it already held artifacts)
without a ``checkpoint``, so it never looks like a complete set of artifacts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from ..errors import ModelSaveError

__all__ = ["discard", "make_staging_dir", "publish"]


def make_staging_dir(target: Path) -> Path:
    """A new empty hidden directory inside ``target`` if it exists, else beside it."""
    parent = target if target.is_dir() else target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return _new_directory(parent, f".{target.name}.", ".partial")
    except OSError as exc:
        raise ModelSaveError(
            f"{target}: cannot create it ({exc.strerror}); choose another directory"
        ) from exc


def publish(staging: Path, target: Path, checkpoint_names: tuple[str, ...]) -> list[Path]:
    """Move every file of ``staging`` into ``target``; checkpoints go last. Returns the paths."""
    names = sorted(os.listdir(staging), key=lambda n: (n in checkpoint_names, n))
    try:
        if not target.exists():
            os.replace(staging, target)
            return [target / name for name in names]
        if not target.is_dir():
            raise ModelSaveError(f"{target}: exists and is not a directory; choose another output")
        for name in checkpoint_names:  # an old checkpoint must not pair with new models
            _remove(target / name)
        for name in names:
            if (target / name).is_dir():
                _remove(target / name)
            os.replace(staging / name, target / name)
    except OSError as exc:
        raise ModelSaveError(f"{target}: cannot write the artifacts ({exc.strerror})") from exc
    finally:
        discard(staging)
    return [target / name for name in names]


def _new_directory(parent: Path, prefix: str, suffix: str) -> Path:
    """A new directory with a random name and the user's umask (``mkdtemp`` makes 0700;
    artifacts get the permissions ORT's own would)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def discard(staging: Path) -> None:
    """Remove a staging directory if it still exists."""
    shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
