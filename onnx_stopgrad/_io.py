"""Reading and writing models safely.

* Models are read without their external data: weights stay on disk.
* External-data locations must stay inside the model's directory.
* Outputs are written to a temporary file beside the target, then renamed, so a crash
  leaves either no output or the previous one, never a truncated file.
* When the output goes to another directory, the external data files it references are
  copied there (streamed by the OS, never loaded into memory), so the new model is
  self-contained and the source model keeps working.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Union

import onnx
from google.protobuf.message import DecodeError

from ._dtypes import tensor_nbytes
from .errors import ModelLoadError, ModelSaveError, OutputIsInputError
from .graph import iter_graphs_with_attributed_nodes

__all__ = [
    "ModelLike",
    "atomic_write_bytes",
    "atomic_writer",
    "default_output_path",
    "external_data_files",
    "input_files",
    "load_model",
    "refuse_overwriting",
    "save_model",
]

log = logging.getLogger(__name__)

ModelLike = Union[onnx.ModelProto, str, "os.PathLike[str]"]


def load_model(model: ModelLike) -> tuple[onnx.ModelProto, Path | None]:
    """Return ``(proto, directory)`` for a ModelProto or a path; weights are not read.

    ``directory`` is the folder external data is relative to (None for a proto).
    """
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{path}: not a readable ONNX model ({reason}); is the file complete?") from exc
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph or no opset_import)")
    directory = path.resolve().parent
    inside: set[str] = set()  # locations already checked
    for tensor in _iter_tensors(proto.graph):  # one pass: large graphs make each pass count
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in inside:
                    _check_inside(directory, entry.value, path)
                    inside.add(entry.value)
            _check_external_extent(directory, tensor, path)
    return proto, directory


def _check_external_extent(directory: Path, tensor: onnx.TensorProto, model_path: Path) -> None:
    """Refuse external data whose file, offset or length cannot hold the tensor.

    Only file sizes are looked at (``stat``); no weight byte is read.
    """
    entries = {entry.key: entry.value for entry in tensor.external_data}
    where = f"{model_path}: tensor {tensor.name!r}"
    extent = {}
    for key in ("offset", "length"):
        text = entries.get(key)
        if text is not None and not (isinstance(text, str) and text.isascii() and text.isdigit()):
            raise ModelLoadError(
                f"{where} has external data {key} {text!r}, not a byte count; is the file corrupt?"
            )
        extent[key] = int(text) if text is not None else None
    location = entries.get("location")
    if not location:
        raise ModelLoadError(f"{where} is stored externally but names no location; is the file corrupt?")
    try:
        size = (directory / location).stat().st_size
        regular = (directory / location).is_file()
    except OSError as exc:
        raise ModelLoadError(
            f"{where}: cannot use its external data file {location[:80]!r} ({exc.strerror}); "
            "keep the data file next to the model"
        ) from exc
    if not regular:
        raise ModelLoadError(f"{where}: external data {location[:80]!r} is not a regular file")
    offset, length = extent["offset"] or 0, extent["length"]
    needed = _tensor_nbytes(tensor)
    available = size - offset
    if (
        available < 0
        or (length is not None and length > available)
        or (needed is not None and (length if length is not None else available) < needed)
    ):
        raise ModelLoadError(
            f"{where}: its external data ({location!r}, offset {offset}, length {length}) lies "
            f"beyond the end of the {size}-byte file; is the data file complete?"
        )


def _tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the data of a fixed-size tensor occupies; None for strings and unknown types."""
    return tensor_nbytes(tensor.data_type, list(tensor.dims))


def _check_inside(directory: Path, location: str, model_path: Path) -> None:
    """Refuse external data that would be read from outside the model's directory.

    Also refused: a location that is not a path at all (a NUL byte, a symlink loop) and
    one that names the directory itself (``""``, ``"."``).
    """
    if not isinstance(location, str):  # protobuf hands back bytes for invalid UTF-8
        raise ModelLoadError(
            f"{model_path}: external data location {location!r} is not valid UTF-8; is the file corrupt?"
        )
    try:
        target = (directory / location).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop
        raise ModelLoadError(
            f"{model_path}: external data location {location!r} is not a usable path "
            f"({exc}); refusing to read it"
        ) from exc
    if os.path.isabs(location) or target == directory or not target.is_relative_to(directory):
        raise ModelLoadError(
            f"{model_path}: external data location {location!r} points outside the "
            "model's directory; refusing to read it"
        )


def _resolves_inside(path: Path, directory: Path) -> bool:
    """Whether ``path``, symlinks followed, is ``directory`` or inside it."""
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except (OSError, ValueError, RuntimeError):  # NUL byte, symlink loop
        return False


def _iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    for each, attributed in iter_graphs_with_attributed_nodes(graph):
        yield from each.initializer
        yield from (sparse.values for sparse in each.sparse_initializer)
        for node in attributed:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """The distinct external-data locations a model references, in first-use order."""
    seen: dict[str, None] = {}
    for tensor in _iter_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    seen.setdefault(entry.value, None)
    return list(seen)


def input_files(path: Path, model: onnx.ModelProto, directory: Path) -> set[Path]:
    """The files the model at ``path`` (as loaded by :func:`load_model`) stands for: the
    model file and its external data, resolved."""
    return {path.resolve(), *((directory / loc).resolve() for loc in external_data_files(model))}


def refuse_overwriting(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """Raise OutputIsInputError if writing ``outputs`` would replace one of ``inputs``."""
    protected = {Path(p).resolve() for p in inputs}
    for output in outputs:
        if Path(output).resolve() in protected:
            raise OutputIsInputError(
                f"{output}: would overwrite an input of this command; choose another output"
            )


def default_output_path(path: str | os.PathLike[str], tag: str = "stopgrad") -> Path:
    """``model.onnx`` -> ``model.stopgrad.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{tag}{path.suffix or '.onnx'}")


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace ``path`` only if the block succeeds.

    The data goes to a temporary file beside ``path`` (fsynced, then renamed); on any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ModelSaveError(f"{path}: cannot write here ({exc.strerror}); choose another output") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise ModelSaveError(f"{path}: write failed ({exc.strerror}); nothing was written") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_writer(path) as handle:
        handle.write(data)


def _copy_external_data(locations: list[str], source_dir: Path, directory: Path, path: Path) -> None:
    """Copy every external-data file next to the output, all or nothing.

    Each file is first copied to a temporary file beside its target; only when every
    copy succeeded are they renamed into place. A failure removes the temporary files
    and any folder created for them, so nothing is left behind.
    """
    staged: list[tuple[str, Path]] = []
    created: list[Path] = []
    try:
        for location in locations:
            target = directory / location
            if not _resolves_inside(target.parent, directory):
                raise ModelSaveError(
                    f"{path}: external data {location!r} would be written outside the output "
                    "directory (a symlinked folder there?); choose another output"
                )
            if target.resolve() == path.resolve():
                raise OutputIsInputError(f"{path}: would overwrite its own external data {location}")
            missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            created.extend(missing)
            log.info("copying external data %s to %s", location, directory)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            staged.append((tmp, target))
            shutil.copyfile(source_dir / location, tmp)
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException as exc:
        for tmp, _ in staged:
            _remove_quietly(tmp)
        for folder in created:  # deepest first, and only if still empty
            try:
                folder.rmdir()
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise ModelSaveError(
                f"{path}: cannot copy external data ({exc.strerror}: {exc.filename}); nothing was written"
            ) from exc
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    source_dir: Path | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically; copy its external data if it moves folders.

    ``source_dir`` is the directory the model's external data is relative to.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ModelSaveError(f"{path}: directory {directory} does not exist; create it first")
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GiB
        raise ModelSaveError(
            f"{path}: model too large to serialise ({exc}); keep its weights as external data"
        ) from exc
    locations = external_data_files(model)
    _refuse_writing_over_external_data(path, locations, [d for d in (source_dir, directory) if d is not None])
    if source_dir is not None and directory.resolve() != source_dir and locations:
        _copy_external_data(locations, source_dir, directory, path)
    atomic_write_bytes(path, data)
    return path


def _refuse_writing_over_external_data(path: Path, locations: list[str], directories: list[Path]) -> None:
    """The output must not replace a data file the model (or its source) reads its weights from."""
    if not locations:
        return
    target = path.resolve()
    for directory in directories:
        for location in locations:
            if isinstance(location, str) and _same_file(directory / location, target):
                raise ModelSaveError(
                    f"{path}: this is the model's external data file {location!r}; "
                    "writing the model there would destroy its weights; choose another output name"
                )


def _same_file(candidate: Path, target: Path) -> bool:
    try:
        return candidate.resolve() == target
    except (OSError, ValueError, RuntimeError):
        return False
