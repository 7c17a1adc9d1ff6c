"""``onnx-stopgrad analyze | show``: what stops cost and save, and a picture of them."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InvalidOptionError
from . import main
from ._options import json_option, model_argument, module_option

__all__ = ["analyze_command", "parse_dims", "show_command"]

_at_option = click.option(
    "--at",
    "at",
    multiple=True,
    metavar="TENSOR",
    help="Also stop the gradient at TENSOR (in memory; nothing is written). Repeatable.",
)
_loss_option = click.option(
    "--loss-output",
    "loss_outputs",
    multiple=True,
    metavar="NAME",
    help="Tensor the loss is computed from [default: every graph output]. Repeatable.",
)


def parse_dims(values: tuple[str, ...]) -> dict[str, int]:
    """``("batch=16", "seq=128")`` -> ``{"batch": 16, "seq": 128}``; one-line error otherwise."""
    dims: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit() or int(number) < 1:
            raise InvalidOptionError(
                f"--dim {value!r}: expected NAME=VALUE with a positive integer, e.g. --dim batch=16"
            )
        dims[name.strip()] = int(number)
    return dims


@main.command("analyze")
@model_argument
@_at_option
@module_option
@_loss_option
@click.option(
    "--dim",
    "dims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Value of a symbolic dimension for the FLOP and memory estimates (others count as 1).",
)
@click.option(
    "--static",
    is_flag=True,
    help="Count gradient nodes statically; do not ask ONNX Runtime to build training graphs.",
)
@json_option
def analyze_command(
    model: Path,
    at: tuple[str, ...],
    modules: tuple[str, ...],
    loss_outputs: tuple[str, ...],
    dims: tuple[str, ...],
    static: bool,
    as_json: bool,
) -> None:
    """What the model's stops (and those named with --at) freeze, remove and save.

    \b
    Example:
      onnx-stopgrad analyze model.onnx --at /backbone/Relu_3_output_0 --dim batch=32
      onnx-stopgrad analyze model.stopgrad.onnx --json > analysis.json
      onnx-stopgrad analyze bert.onnx --module bert.encoder.layer.5
    """
    from ..analysis import analyze

    report = analyze(
        model,
        at=at,
        modules=modules,
        loss_outputs=loss_outputs or None,
        dims=parse_dims(dims),
        use_onnxruntime=not static,
    )
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.format_text())


@main.command("show")
@model_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Picture to write: .svg, .png, .pdf (need Graphviz) or .dot [default: MODEL with .svg].",
)
@_at_option
@module_option
@_loss_option
@click.option(
    "--max-nodes",
    type=click.IntRange(min=1),
    default=150,
    show_default=True,
    help="Above this many nodes, collapse nodes into boxes by name scope.",
)
def show_command(
    model: Path,
    output: Path | None,
    at: tuple[str, ...],
    modules: tuple[str, ...],
    loss_outputs: tuple[str, ...],
    max_nodes: int,
) -> None:
    """Draw the graph: stops highlighted, the region without gradient shaded.

    \b
    Example:
      onnx-stopgrad show model.stopgrad.onnx -o graph.svg
      onnx-stopgrad show model.onnx --at /encoder/output -o graph.png --max-nodes 80
      onnx-stopgrad show bert.onnx --module bert.encoder.layer.5 -o bert.svg

    Boxes are named after module scopes (node names or the dynamo exporter's metadata).
    """
    from ..visual import draw

    target = output if output is not None else model.with_suffix(".svg")
    report = draw(
        model, target, at=at, loss_outputs=loss_outputs or None, max_nodes=max_nodes, modules=modules
    )
    click.echo(report.summary())
