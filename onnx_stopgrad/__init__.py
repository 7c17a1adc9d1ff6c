"""onnx-stopgrad: ``tf.stop_gradient`` / ``Tensor.detach`` for ONNX and ONNX Runtime training.

Importing the package registers the StopGradient schema with ``onnx.defs``. Everything
else is imported on first use, so onnxruntime and torch load only when needed.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

from . import schema as _schema
from ._names import DOMAIN, OP_TYPE, OPSET_VERSION
from .errors import StopGradError

_schema.register()

# The library never prints: without a handler, Python's last-resort handler would write the
# warnings of onnx_stopgrad.* loggers to stderr. The CLI installs its own (cli/__init__.py).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# Public name -> module that defines it (imported lazily by __getattr__).
_LAZY = {
    "get_library_path": "._library",
    "session_options": "._library",
    "insert_stop_gradient": ".passes",
    "remove_stop_gradient": ".passes",
    "list_stop_gradients": ".passes",
    "scale_gradient": ".passes",
    "straight_through": ".passes",
    "InsertReport": ".passes",
    "RemoveReport": ".passes",
    "StopGradientInfo": ".passes",
    "ListReport": ".passes",
    "module_outputs": ".modules",
    "cut_points": ".modules",
}

__all__ = ["__version__", "DOMAIN", "OP_TYPE", "OPSET_VERSION", "StopGradError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
