"""``onnx-stopgrad artifacts | train | export``: ONNX Runtime training artifacts, a training
loop, and the trained model for inference."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import TrainingError
from ..training import BATCHNORM_MODES, DROPOUT_MODES, LOSSES, OPTIMIZERS, mode_lines
from . import main
from ._options import json_option, model_argument, module_option

__all__ = ["artifacts", "export", "train"]

_SHOWN = 8  # names listed per group before "... and N more"


def _names(names: tuple[str, ...]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown}, ... and {len(names) - _SHOWN} more"


@main.command(short_help="Build ONNX Runtime training artifacts that honour StopGradient.")
@model_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Artifact directory (created) [default: MODEL's name + .artifacts].",
)
@click.option(
    "--loss", type=click.Choice(sorted(LOSSES)), required=True, help="Loss added on the model's output."
)
@click.option(
    "--loss-input",
    "loss_inputs",
    multiple=True,
    metavar="NAME",
    help="Output the loss reads (repeatable; a second NAME is its labels/target) [default: all outputs].",
)
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)), default="adamw", show_default=True)
@click.option(
    "--at", "ats", multiple=True, metavar="TENSOR", help="Insert a StopGradient at TENSOR first (repeatable)."
)
@module_option
@click.option(
    "--requires-grad",
    "requires_grad",
    multiple=True,
    metavar="NAME",
    help="Train exactly these parameters [default: all that reach the loss around the stops].",
)
@click.option(
    "--frozen", "frozen", multiple=True, metavar="NAME", help="Also freeze this parameter (repeatable)."
)
@click.option("--prefix", default="", help="Prefix of the artifact file names.")
@click.option(
    "--batchnorm",
    type=click.Choice(BATCHNORM_MODES),
    default="as-exported",
    show_default=True,
    help="BatchNormalization mode in the trainable region (behind the stops: always eval).",
)
@click.option(
    "--dropout",
    type=click.Choice(DROPOUT_MODES),
    default="as-exported",
    show_default=True,
    help="Dropout in the trainable region (behind the stops: always off).",
)
@click.option(
    "--portable",
    is_flag=True,
    help="Write the stops as plain Identity nodes: same training, and any ONNX Runtime training "
    "runtime (C, C++, C#, Java, mobile) loads the artifacts without the op library.",
)
@json_option
def artifacts(
    model: Path,
    output: Path | None,
    loss: str,
    loss_inputs: tuple[str, ...],
    optimizer: str,
    ats: tuple[str, ...],
    modules: tuple[str, ...],
    requires_grad: tuple[str, ...],
    frozen: tuple[str, ...],
    prefix: str,
    batchnorm: str,
    dropout: str,
    portable: bool,
    as_json: bool,
) -> None:
    """Write training_model.onnx, eval_model.onnx, optimizer_model.onnx and checkpoint.

    No gradient is computed behind a StopGradient; parameters reached only through
    stops are frozen. Prints what trains, what is frozen, how many gradient nodes the
    stops removed and what was adjusted so ONNX Runtime 1.19 accepts the model.

    BatchNormalization and Dropout behind the stops run in inference mode; in the
    trainable region they run as exported, unless --batchnorm/--dropout say otherwise.

    crossentropy reads logits with the class axis last, (N, C) or (B, T, C) as LMs and
    token classifiers output them, with int64 labels (N,) or (B, T); labels -100 are skipped.

    \b
    Examples:
      onnx-stopgrad artifacts resnet.onnx --at layer3_out --loss crossentropy
      onnx-stopgrad artifacts resnet.onnx --loss crossentropy --batchnorm train --dropout off
      onnx-stopgrad artifacts classifier.stopgrad.onnx --loss crossentropy
      onnx-stopgrad artifacts gpt2.onnx --at /model/transformer/h.0/Add_1_output_0 --loss crossentropy \
        --loss-input logits
      onnx-stopgrad artifacts bert.onnx --loss crossentropy --module bert.encoder.layer.9
      onnx-stopgrad artifacts model.stopgrad.onnx --loss mse --portable -o mobile.artifacts
      onnx-stopgrad artifacts model.onnx --loss mse --frozen head.bias --json
    """
    from ..training import generate_artifacts

    target = output if output is not None else model.with_name(f"{model.stem}.artifacts")
    result = generate_artifacts(
        model, requires_grad=list(requires_grad) or None, frozen_params=list(frozen) or None,
        loss=loss, optimizer=optimizer, artifact_directory=target, prefix=prefix, stop_at=ats,
        batchnorm=batchnorm, dropout=dropout,
        loss_input_names=list(loss_inputs) or None,
        stop_modules=modules,
        portable=portable,
    )  # fmt: skip
    inserted = list(result.inserted)
    removed = result.gradient_nodes_removed
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for line in inserted:
        click.echo(line)
    click.echo(f"wrote {result.directory}/: {', '.join(result.files)}")
    click.echo(f"stops ({len(result.stops)}): {_names(result.stops)}")
    if portable and result.stops:
        click.echo("portable: the stops are written as Identity; the artifacts run without the op library")
    click.echo(f"trainable ({len(result.trainable)}): {_names(result.trainable)}")
    click.echo(f"frozen ({len(result.frozen)}): {_names(result.frozen)}")
    if removed is None:
        click.echo(f"gradient nodes: {result.gradient_nodes} (not measured without the stops)")
    else:
        click.echo(
            f"gradient nodes: {result.gradient_nodes}; the stops removed {removed} "
            f"({result.gradient_nodes_without_stops} without them)"
        )
    for line in mode_lines(result.modes, _names):
        click.echo(line)
    for line in result.adjustments:
        click.echo(f"adjusted: {line}")


@main.command(short_help="Train from an artifact directory on .npz data (saves the checkpoint).")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="A .npz file with one array per training input, named like it (e.g. x, labels).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="[default: the model's batch, else 32]"
)
@click.option(
    "--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffling.")
def train(
    directory: Path, data: Path, epochs: int, batch_size: int | None, learning_rate: float | None, seed: int
) -> None:
    """Run the training loop of DIR (made by `onnx-stopgrad artifacts`) and print the loss per epoch.

    The .npz arrays are named after the training model's inputs: the model's own inputs
    plus the loss's `labels` (crossentropy, int64; (N,) or (N, T) for sequence logits, -100
    skips a position) or `target` (mse, l1, bce); examples along axis 0. The trained
    parameters are saved back into DIR/checkpoint.

    \b
    Examples:
      onnx-stopgrad train artifacts/ --data train.npz --epochs 5
      onnx-stopgrad train artifacts/ --data train.npz --batch-size 16 --lr 1e-3 --seed 1
    """
    from ..training import ort_artifacts

    ort_artifacts()  # one line naming the [training] extra where ONNX Runtime training is missing
    try:
        from tqdm import tqdm
    except ImportError as exc:
        raise TrainingError(f"tqdm is not installed ({exc}): pip install 'onnx-stopgrad[training]'") from exc

    from ..training import fit, read_npz

    arrays = read_npz(data)
    bars: list[tqdm] = []  # made once the data is checked, so errors print no empty bar

    def on_start(total: int) -> None:
        bars.append(tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True))

    def on_batch(epoch: int, loss: float) -> None:
        bars[0].set_description(f"epoch {epoch + 1}/{epochs}")
        bars[0].set_postfix(loss=f"{loss:.4f}")
        bars[0].update()

    def on_epoch(epoch: int, loss: float) -> None:
        bars[0].clear()
        click.echo(f"epoch {epoch + 1}/{epochs}: loss {loss:.6f}")

    try:
        fit(
            directory, arrays, epochs, batch_size, learning_rate, seed,
            on_batch=on_batch, on_epoch=on_epoch, on_start=on_start,
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    click.echo(f"saved {directory / 'checkpoint'}")
    click.echo(f"(`onnx-stopgrad export {directory} -o MODEL.onnx` writes the trained model for inference)")


@main.command(short_help="Write the trained model of an artifact directory for inference.")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Model file to write.",
)
@click.option(
    "--keep-stops/--no-stops",
    default=True,
    show_default=True,
    help="Keep the StopGradient nodes and gradient constructs (needs the op library to run) or "
    "remove them (runs anywhere; forward values unchanged).",
)
@click.option(
    "--output-name",
    "output_names",
    multiple=True,
    metavar="NAME",
    help="Output to keep (repeatable) [default: the outputs of the model the artifacts were built from].",
)
@click.option(
    "--external-data/--no-external-data",
    default=None,
    help="Weights in OUTPUT.data beside the model [default: only above 1 GiB of weights].",
)
@click.option("--prefix", default="", help="Prefix of the artifact file names.")
def export(
    directory: Path,
    output: Path,
    keep_stops: bool,
    output_names: tuple[str, ...],
    external_data: bool | None,
    prefix: str,
) -> None:
    """Write DIR's eval model with the trained weights of DIR/checkpoint as initializers.

    The loss is dropped; the model keeps the outputs of the model the artifacts were built
    from. ONNX Runtime's own Module.export_model_for_inferencing fails on models with
    StopGradient; this does not.

    \b
    Examples:
      onnx-stopgrad export artifacts/ -o trained.onnx
      onnx-stopgrad export artifacts/ -o trained.plain.onnx --no-stops
    """
    from ..training import export_for_inference

    written = export_for_inference(
        directory, output, keep_stops=keep_stops, output_names=list(output_names) or None,
        external_data=external_data, prefix=prefix,
    )  # fmt: skip
    stops = "StopGradient kept: run it with the op library" if keep_stops else "StopGradient removed"
    click.echo(f"wrote {written} (weights from {directory / f'{prefix}checkpoint'}; {stops})")
