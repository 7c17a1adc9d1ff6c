"""The ``onnx-stopgrad`` command line: thin wrappers over the Python API.

A :class:`~onnx_stopgrad.errors.StopGradError` becomes one line on stderr and exit status 1.
Warnings the library logs are printed as ``warning: ...`` lines after a command succeeds,
and dropped when it fails (the error line is then the only line); ``-v`` prints them (and
info messages) as they happen.
"""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import StopGradError

__all__ = ["main"]


class _Messages(logging.Handler):
    """Prints ``warning: ...`` lines on stderr, at once (verbose) or held until success."""

    def __init__(self, live: bool) -> None:
        super().__init__(logging.INFO if live else logging.WARNING)
        self.live = live
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.levelname.lower()}: {record.getMessage()}"
        if self.live:
            click.echo(line, err=True)
        else:
            self.held.append(line)

    def flush_held(self) -> None:
        for line in self.held:
            click.echo(line, err=True)
        self.held.clear()


_LOGGER = logging.getLogger("onnx_stopgrad")


class _UserErrorsAsOneLine(click.Group):
    """A click group that prints user errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            result = super().invoke(ctx)
            _end_messages(ctx, print_held=True)
            return result
        except StopGradError as exc:
            _end_messages(ctx, print_held=False)
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _end_messages(ctx, print_held=False)
            click.echo("interrupted; the input is untouched", err=True)
            sys.exit(130)
        finally:
            _end_messages(ctx, print_held=False)


def _start_messages(ctx: click.Context, verbose: bool) -> None:
    handler = _Messages(live=verbose)
    ctx.meta["onnx_stopgrad.messages"] = (handler, _LOGGER.level, _LOGGER.propagate)
    _LOGGER.addHandler(handler)
    _LOGGER.setLevel(handler.level)
    _LOGGER.propagate = False


def _end_messages(ctx: click.Context, print_held: bool) -> None:
    state = ctx.meta.pop("onnx_stopgrad.messages", None)
    if state is None:
        return
    handler, level, propagate = state
    _LOGGER.removeHandler(handler)
    _LOGGER.setLevel(level)
    _LOGGER.propagate = propagate
    if print_held:
        handler.flush_held()


@click.group(
    cls=_UserErrorsAsOneLine,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="onnx-stopgrad")
@click.option("-v", "--verbose", is_flag=True, help="Print warnings and progress messages as they happen.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Block gradients at chosen tensors of ONNX models, for ONNX Runtime training.

    \b
    Typical use:
      onnx-stopgrad insert model.onnx --at /backbone/Relu_3_output_0
      onnx-stopgrad list model.stopgrad.onnx
      onnx-stopgrad scale model.onnx --at features --factor -0.3 --consumer /domain/Gemm
      onnx-stopgrad straight-through model.onnx --node /act/Round
      onnx-stopgrad artifacts model.stopgrad.onnx -o artifacts/ --loss crossentropy
    """
    _start_messages(ctx, verbose)


# Command modules register themselves on `main` when imported, so they come after it.
from . import (  # noqa: E402
    analysis,  # noqa: F401
    family,  # noqa: F401
    points,  # noqa: F401
    rewrite,  # noqa: F401
    training,  # noqa: F401
)
