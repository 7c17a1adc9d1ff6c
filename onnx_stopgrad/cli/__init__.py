"""The ``onnx-stopgrad`` command line: thin wrappers over the Python API.

A :class:`~onnx_stopgrad.errors.StopGradError` becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import StopGradError

__all__ = ["main"]


class _UserErrorsAsOneLine(click.Group):
    """A click group that prints user errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except StopGradError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; the input is untouched", err=True)
            sys.exit(130)


@click.group(
    cls=_UserErrorsAsOneLine,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="onnx-stopgrad")
def main() -> None:
    """Block gradients at chosen tensors of ONNX models, for ONNX Runtime training.

    \b
    Typical use:
      onnx-stopgrad insert model.onnx --at /backbone/Relu_3_output_0
      onnx-stopgrad list model.stopgrad.onnx
      onnx-stopgrad artifacts model.stopgrad.onnx -o artifacts/ --loss crossentropy
    """


# Command modules register themselves on `main` when imported.
from . import rewrite  # noqa: E402,F401
from . import inspect  # noqa: E402,F401
from . import training  # noqa: E402,F401
