"""Graph passes that insert, remove and list StopGradient nodes, scale gradients, pass them straight through.

Each public function accepts a ModelProto (copied, never changed), a path, or an
``onnx_graphsurgeon.Graph``, and returns the new model with a frozen report dataclass
(``to_dict()`` for JSON, ``summary()`` for people). The ``*_in_place`` variants change a
ModelProto the caller owns and skip the copy (the CLI uses them).
"""

from __future__ import annotations

from ..graph import validate as validate_model
from ._files import rewrite_file
from ._model import ModelInput, read_model
from ._select import closest_names, node_names, select_tensors, tensor_names
from .family_reports import ScaleReport, StraightThroughReport
from .insert import insert_in_place, insert_stop_gradient
from .listing import list_stop_gradients
from .remove import remove_in_place, remove_stop_gradient
from .reports import (
    ConstructInfo,
    Insertion,
    InsertReport,
    ListReport,
    Removal,
    RemoveReport,
    Skipped,
    StopGradientInfo,
)
from .scale import scale_gradient, scale_in_place
from .straight_through import straight_through, straight_through_in_place

__all__ = [
    "ConstructInfo",
    "InsertReport",
    "Insertion",
    "ListReport",
    "ModelInput",
    "Removal",
    "RemoveReport",
    "ScaleReport",
    "Skipped",
    "StopGradientInfo",
    "StraightThroughReport",
    "closest_names",
    "insert_in_place",
    "insert_stop_gradient",
    "list_stop_gradients",
    "node_names",
    "read_model",
    "remove_in_place",
    "remove_stop_gradient",
    "rewrite_file",
    "scale_gradient",
    "scale_in_place",
    "select_tensors",
    "straight_through",
    "straight_through_in_place",
    "tensor_names",
    "validate_model",
]
