"""``onnx-stopgrad points``: the modules of a model as places to stop, with what each freezes."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from ._options import json_option, model_argument

__all__ = ["points_command"]


@main.command("points", short_help="List the modules where the gradient can be stopped (--module PATH).")
@model_argument
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Show modules down to this many levels (the JSON lists all unless given).",
)
@json_option
@click.pass_context
def points_command(ctx: click.Context, model: Path, depth: int, as_json: bool) -> None:
    """List the modules of MODEL as a tree: outputs (dtype, shape), parameters inside, and
    what `insert --module PATH` would freeze there and leave trainable.

    Module paths come from the exporter: TorchScript's scoped node names or the dynamo
    exporter's name_scopes metadata.

    \b
    Examples:
      onnx-stopgrad points bert.onnx
      onnx-stopgrad points bert.onnx --depth 5
      onnx-stopgrad points bert.onnx --json | jq '.points[] | {path, frozen}'
    """
    from ..modules import cut_points

    explicit = ctx.get_parameter_source("depth") is not click.core.ParameterSource.DEFAULT
    report = cut_points(model, depth if (explicit or not as_json) else None)
    click.echo(report.to_json() if as_json else report.format_text())
