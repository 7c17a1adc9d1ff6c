"""Errors raised by onnx-stopgrad.

Every :class:`StopGradError` is a *user* error: its message is one line that says what
went wrong and what to do. The CLI prints it and exits non-zero without a traceback.
Any other exception is a bug and keeps its traceback. The base class is never raised
itself: each kind of user error has its own class.
"""

from __future__ import annotations

__all__ = [
    "ConstructError",
    "ExportError",
    "InvalidModelError",
    "InvalidOptionError",
    "LibraryError",
    "ModelLoadError",
    "ModelSaveError",
    "OutputIsInputError",
    "StopGradError",
    "TensorNotFoundError",
    "TrainingError",
]


class StopGradError(Exception):
    """Base class of every error a user can cause and fix."""


class ModelLoadError(StopGradError):
    """A model file is missing, unreadable, truncated or not ONNX."""


class ModelSaveError(StopGradError):
    """The output could not be written (the input is untouched)."""


class TensorNotFoundError(StopGradError):
    """A tensor or node named by the user is not in the graph."""


class InvalidModelError(StopGradError):
    """The graph is malformed in a way that makes the request impossible."""


class LibraryError(StopGradError):
    """The custom-op library is missing or the runtime is too old for it."""


class TrainingError(StopGradError):
    """Training artifacts cannot be built or loaded as asked."""


class ConstructError(StopGradError):
    """A gradient-scale or straight-through construct cannot be built as asked."""


class InvalidOptionError(StopGradError):
    """An option's value is malformed (an invalid ``--regex``, a ``--dim`` that is not NAME=VALUE)."""


class OutputIsInputError(ModelSaveError):
    """The output would replace an input of the command (the model, its external data, ...)."""


class ExportError(StopGradError):
    """A PyTorch module cannot be exported as asked."""
