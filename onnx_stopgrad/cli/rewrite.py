"""``onnx-stopgrad insert | remove | list``: thin wrappers over :mod:`onnx_stopgrad.passes`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import onnx

from ..passes import (
    InsertReport,
    insert_in_place,
    list_stop_gradients,
    remove_in_place,
    rewrite_file,
    select_tensors,
)
from . import main
from ._options import (
    emit,
    in_place_option,
    json_option,
    model_argument,
    module_option,
    output_option,
    resolve_output,
    strict_option,
)

__all__ = ["insert", "list_command", "remove"]


class _PairedOptions(click.Command):
    """Remembers the order of ``--at`` and ``--consumer`` on the command line.

    Click collects each repeated option into its own tuple; the order of the two kinds is
    what pairs a ``--consumer`` with the ``--at`` before it.
    """

    tracked = ("--at", "--consumer")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            opt
            for param in self.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for opt in param.opts
        }
        order: list[str] = []
        tokens = iter(args)
        for token in tokens:
            if token == "--":
                break
            name = token.split("=", 1)[0] if token.startswith("--") else token
            if name in self.tracked:
                order.append(name)
            if name in takes_value and "=" not in token:
                next(tokens, None)
        ctx.meta["onnx_stopgrad.order"] = order
        return super().parse_args(ctx, args)


def _pair_consumers(ctx: click.Context, ats: Sequence[str], consumers: Sequence[str]) -> dict[str, list[str]]:
    order = ctx.meta.get("onnx_stopgrad.order", [])
    if order.count("--consumer") != len(consumers) or order.count("--at") != len(ats):
        raise click.UsageError("could not pair --consumer with --at; write --at TENSOR --consumer NODE")
    pairs: dict[str, list[str]] = {}
    at_values, consumer_values = iter(ats), iter(consumers)
    current: str | None = None
    for kind in order:
        if kind == "--at":
            current = next(at_values)
        elif current is None:
            raise click.UsageError("--consumer NODE must follow the --at TENSOR it applies to")
        else:
            pairs.setdefault(current, []).append(next(consumer_values))
    return pairs


@main.command(cls=_PairedOptions, short_help="Stop the gradient at tensors (adds StopGradient nodes).")
@model_argument
@click.option("--at", "ats", multiple=True, metavar="TENSOR", help="Tensor to stop (repeatable).")
@click.option(
    "--consumer",
    "consumers",
    multiple=True,
    metavar="NODE",
    help="Stop only the edge from the preceding --at into this node (repeatable).",
)
@click.option("--match", "globs", multiple=True, metavar="GLOB", help="Stop every tensor whose name matches.")
@click.option(
    "--regex", "regexes", multiple=True, metavar="RE", help="Stop every tensor whose name contains a match."
)
@module_option
@output_option()
@in_place_option
@strict_option
@json_option
@click.pass_context
def insert(
    ctx: click.Context,
    model: Path,
    ats: tuple[str, ...],
    consumers: tuple[str, ...],
    globs: tuple[str, ...],
    regexes: tuple[str, ...],
    modules: tuple[str, ...],
    output: Path | None,
    in_place: bool,
    strict: bool,
    as_json: bool,
) -> None:
    """Stop the gradient at tensors of MODEL: nothing behind them is trained.

    Each chosen tensor gets a StopGradient node right after its producer; its readers
    read the stopped copy. Graph outputs keep their names and values.

    \b
    Examples:
      onnx-stopgrad insert model.onnx --at /backbone/Relu_3_output_0
      onnx-stopgrad insert model.onnx --at h --consumer /head/Gemm -o out.onnx
      onnx-stopgrad insert model.onnx --match '/encoder/layers.0/*' --in-place
      onnx-stopgrad insert bert.onnx --module bert.encoder.layer.5
      onnx-stopgrad insert bert.onnx --module 'bert.encoder.layer.[0-5]'

    --module takes the module path as PyTorch names it (`onnx-stopgrad points MODEL`
    lists them); every tensor the module hands to the rest of the model is stopped for
    the nodes outside the module. In globs `*` stays within one dotted part, `**` does not.
    """
    if not (ats or globs or regexes or modules):
        raise click.UsageError("name the tensors to stop with --at, --match, --regex or --module")
    pairs = _pair_consumers(ctx, ats, consumers)
    target_path = resolve_output(model, output, in_place)

    def change(proto: onnx.ModelProto) -> InsertReport:
        targets = list(dict.fromkeys([*ats, *select_tensors(proto, globs, regexes)]))
        return insert_in_place(proto, targets, pairs, module=modules)

    report, written = rewrite_file(model, target_path, change, in_place=in_place, strict=strict)
    emit(report, as_json, wrote=written)


@main.command(short_help="Take StopGradient nodes out again.")
@model_argument
@click.option(
    "--at",
    "ats",
    multiple=True,
    metavar="NAME",
    help="Remove only this StopGradient: its node name, input or output (repeatable) [default: all].",
)
@click.option("--to-identity", is_flag=True, help="Replace the nodes with Identity instead of rewiring.")
@output_option("Output file [default: MODEL with .nostopgrad before the suffix].")
@in_place_option
@strict_option
@json_option
def remove(
    model: Path,
    ats: tuple[str, ...],
    to_identity: bool,
    output: Path | None,
    in_place: bool,
    strict: bool,
    as_json: bool,
) -> None:
    """Take StopGradient nodes out of MODEL, so it runs without the op library.

    Readers of each stopped copy read the original tensor again.

    \b
    Examples:
      onnx-stopgrad remove model.stopgrad.onnx -o model.plain.onnx
      onnx-stopgrad remove model.stopgrad.onnx --at h/StopGradient --in-place
      onnx-stopgrad remove model.stopgrad.onnx --to-identity
    """
    target_path = resolve_output(model, output, in_place, tag="nostopgrad")
    report, written = rewrite_file(
        model, target_path, lambda proto: remove_in_place(proto, list(ats) or None, to_identity),
        in_place=in_place, strict=strict,
    )  # fmt: skip
    emit(report, as_json, wrote=written)


@main.command(name="list", short_help="List StopGradient nodes and the parameters they freeze.")
@model_argument
@json_option
def list_command(model: Path, as_json: bool) -> None:
    """List the StopGradient nodes of MODEL and the parameters they freeze.

    \b
    Examples:
      onnx-stopgrad list model.stopgrad.onnx
      onnx-stopgrad list model.stopgrad.onnx --json | jq '.frozen_parameters'
    """
    emit(list_stop_gradients(model), as_json)
