"""Graph passes that insert, remove and list StopGradient nodes.

Each public function accepts a ModelProto (copied, never changed), a path, or an
``onnx_graphsurgeon.Graph``, and returns the new model with a frozen report dataclass
(``to_dict()`` for JSON, ``summary()`` for people). The ``*_in_place`` variants change a
ModelProto the caller owns and skip the copy (the CLI uses them).
"""

from __future__ import annotations

from ..graph import validate as validate_model
from ._select import closest_names, node_names, select_tensors, tensor_names
from ._files import rewrite_file
from .insert import insert_in_place, insert_stop_gradient
from .listing import list_stop_gradients
from .remove import remove_in_place, remove_stop_gradient
from .reports import (
    Insertion,
    InsertReport,
    ListReport,
    Removal,
    RemoveReport,
    Skipped,
    StopGradientInfo,
)

__all__ = [
    "insert_stop_gradient",
    "remove_stop_gradient",
    "list_stop_gradients",
    "insert_in_place",
    "remove_in_place",
    "InsertReport",
    "Insertion",
    "Skipped",
    "RemoveReport",
    "Removal",
    "ListReport",
    "StopGradientInfo",
    "select_tensors",
    "validate_model",
    "tensor_names",
    "node_names",
    "closest_names",
    "rewrite_file",
]
