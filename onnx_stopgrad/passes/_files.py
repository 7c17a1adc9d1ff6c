"""Rewrite a model file: load it, judge its validity, change it, guard and save the output.

What every writing command does around its pass, in one place, so the CLI only parses
options, calls this and prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import onnx

from .._io import load_model, refuse_overwriting, save_model
from ._validity import accept_input, check_output

__all__ = ["rewrite_file"]


class _Report(Protocol):
    @property
    def modified(self) -> bool: ...


R = TypeVar("R", bound=_Report)


def rewrite_file(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    change: Callable[[onnx.ModelProto], R],
    *,
    in_place: bool = False,
    strict: bool = False,
) -> tuple[R, Path | None]:
    """Apply ``change`` to the model at ``model`` and save the result to ``output``.

    ``output`` may be ``model`` itself only with ``in_place`` (then an unchanged model is
    not rewritten: the path returned is None). An input the ONNX checker rejects is
    refused with ``strict``, else accepted with one warning, and the output must be no
    less valid (see :mod:`._validity`). The output is written atomically.
    """
    source, target = Path(model), Path(output)
    if not in_place:
        refuse_overwriting([target], [source])
    proto, source_dir = load_model(source)
    problem = accept_input(source, strict)
    report = change(proto)
    if in_place and not report.modified:
        return report, None
    check_output(proto, problem)
    return report, save_model(proto, target, source_dir)
