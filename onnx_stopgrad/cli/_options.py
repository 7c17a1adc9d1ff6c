"""Click options shared by the commands that read a model and write another.

Each is a decorator, so a command subscribes to exactly the options it needs::

    @main.command()
    @model_argument
    @output_option()
    @in_place_option
    @json_option
    def mycommand(model, output, in_place, as_json): ...
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .._io import default_output_path
from ..errors import OutputIsInputError

__all__ = [
    "emit",
    "in_place_option",
    "json_option",
    "model_argument",
    "module_option",
    "output_option",
    "resolve_output",
    "strict_option",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The input model; its existence is checked by the loader, which says what is wrong in one line.
model_argument = click.argument("model", type=click.Path(path_type=Path), metavar="MODEL")

in_place_option = click.option(
    "--in-place", is_flag=True, help="Overwrite MODEL itself (atomically) instead of writing a new file."
)

strict_option = click.option(
    "--strict",
    is_flag=True,
    help=(
        "Refuse a model the ONNX checker rejects "
        "[default: accept it with a warning; the output gets no new problem]."
    ),
)

#: ``--module PATH``: stop the outputs of a PyTorch module (docs/modules.md).
module_option = click.option(
    "--module",
    "modules",
    multiple=True,
    metavar="PATH",
    help="Stop the outputs of this PyTorch module (e.g. bert.encoder.layer.1; globs; repeatable).",
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON report on stdout instead of text."
)


def output_option(
    help: str = "Output file [default: MODEL with .stopgrad before the suffix].",
    *,
    dir_okay: bool = False,
) -> Callable[[F], F]:
    """``-o/--output PATH``; a file by default, a folder with ``dir_okay=True``."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=dir_okay, file_okay=not dir_okay),
        default=None,
        help=help,
    )


def resolve_output(model: Path, output: Path | None, in_place: bool, tag: str = "stopgrad") -> Path:
    """Where to write: ``--in-place`` -> MODEL, ``-o`` -> that, else MODEL.<tag>.onnx.

    Refuses to overwrite MODEL unless ``in_place`` is set.
    """
    if in_place and output is not None and output.resolve() != model.resolve():
        raise click.UsageError("give either --in-place or -o/--output, not both")
    if in_place:
        return model
    target = output if output is not None else default_output_path(model, tag)
    if target.resolve() == model.resolve():
        raise OutputIsInputError(f"{target}: this is the input model; pass --in-place to overwrite it")
    return target


def emit(report: Any, as_json: bool, **extra: Any) -> None:
    """Print a report: its ``summary()`` as text, or ``to_dict()`` (plus ``extra``) as JSON."""
    if as_json:
        click.echo(
            json.dumps(
                {**report.to_dict(), **{k: str(v) if isinstance(v, Path) else v for k, v in extra.items()}},
                indent=2,
            )
        )
        return
    click.echo(report.summary())
    for key, value in extra.items():
        if value is not None:
            click.echo(f"{key}: {value}")
