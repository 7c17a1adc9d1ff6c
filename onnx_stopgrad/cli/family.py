"""``onnx-stopgrad scale | straight-through``: thin wrappers over the gradient-construct passes."""

from __future__ import annotations

from pathlib import Path

import click

from ..passes import rewrite_file, scale_in_place, straight_through_in_place
from . import main
from ._options import (
    emit,
    in_place_option,
    json_option,
    model_argument,
    output_option,
    resolve_output,
    strict_option,
)

__all__ = ["scale", "straight_through"]


@main.command(short_help="Scale or reverse the gradient through a tensor (forward unchanged).")
@model_argument
@click.option("--at", required=True, metavar="TENSOR", help="Tensor whose gradient is scaled.")
@click.option(
    "--factor",
    required=True,
    type=float,
    metavar="F",
    help="Gradient multiplier: -1 (or -lambda) reverses it, 0 stops it.",
)
@click.option(
    "--consumer",
    "consumers",
    multiple=True,
    metavar="NODE",
    help="Scale only the edge from TENSOR into this node (repeatable) [default: every reader].",
)
@output_option()
@in_place_option
@strict_option
@json_option
def scale(
    model: Path,
    at: str,
    factor: float,
    consumers: tuple[str, ...],
    output: Path | None,
    in_place: bool,
    strict: bool,
    as_json: bool,
) -> None:
    """Multiply the gradient flowing back through TENSOR by F; forward values stay bit-identical.

    The readers of TENSOR (or only the --consumer nodes) read the output of a
    gradient-scale construct: one StopGradient, a Sub, a Mul and a Sub, named
    TENSOR/GradScale/*, listed and removed as one unit.

    \b
    Examples:
      onnx-stopgrad scale dann.onnx --at features --factor -0.3 --consumer /domain/Gemm
      onnx-stopgrad scale mtl.onnx --at /trunk/Relu_output_0 --factor 0.1 --consumer /aux/Gemm
      onnx-stopgrad remove model.stopgrad.onnx --at features/GradScale
    """
    target_path = resolve_output(model, output, in_place)
    report, written = rewrite_file(
        model, target_path, lambda proto: scale_in_place(proto, at, factor, consumers or None),
        in_place=in_place, strict=strict,
    )  # fmt: skip
    emit(report, as_json, wrote=written)


@main.command(name="straight-through", short_help="Pass a node's gradient straight through (STE).")
@model_argument
@click.option(
    "--node",
    "nodes",
    required=True,
    multiple=True,
    metavar="NODE",
    help="The node; give it twice for a chain: its first node, then its last.",
)
@click.option(
    "--input",
    "input_name",
    default=None,
    metavar="NAME",
    help="The first node's input that gets the gradient [default: its only non-constant input].",
)
@output_option()
@in_place_option
@strict_option
@json_option
def straight_through(
    model: Path,
    nodes: tuple[str, ...],
    input_name: str | None,
    output: Path | None,
    in_place: bool,
    strict: bool,
    as_json: bool,
) -> None:
    """Keep NODE's forward value and pass its gradient to its input as if NODE were the identity.

    For single-input, same-shape nodes (Round, Sign, Floor, Ceil) and chains of them,
    such as a fake-quantize Div -> Round -> Mul -> Clip given as its first and last node.
    Constants and initializers may be read besides the input. The readers of the node's
    output read a straight-through construct named INPUT/StraightThrough/*, listed and
    removed as one unit.

    \b
    Examples:
      onnx-stopgrad straight-through qat.onnx --node /act/Round
      onnx-stopgrad straight-through qat.onnx --node /fq1/Div --node /fq1/Clip
      onnx-stopgrad straight-through qat.onnx --node /wq/Div --node /wq/Mul --input fc1.weight
    """
    if len(nodes) > 2:
        raise click.UsageError("give --node once (one node) or twice (a chain's first and last node)")
    target_path = resolve_output(model, output, in_place)
    report, written = rewrite_file(
        model, target_path, lambda proto: straight_through_in_place(proto, nodes[0], nodes[-1], input_name),
        in_place=in_place, strict=strict,
    )  # fmt: skip
    emit(report, as_json, wrote=written)
