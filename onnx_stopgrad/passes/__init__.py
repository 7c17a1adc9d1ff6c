"""Graph passes that insert, remove and list StopGradient nodes, scale gradients, pass them straight through.

Each public function accepts a ModelProto (copied, never changed), a path, or an
``onnx_graphsurgeon.Graph``, and returns the new model with a frozen report dataclass
(``to_dict()`` for JSON, ``summary()`` for people). The ``*_in_place`` variants change a
ModelProto the caller owns and skip the copy (the CLI uses them).
"""

from __future__ import annotations

from ..graph import validate as validate_model
from ._select import closest_names, node_names, select_tensors, tensor_names
from .family_reports import ScaleReport, StraightThroughReport
from ._files import rewrite_file
from ._model import ModelInput, read_model
from .insert import insert_in_place, insert_stop_gradient
from .listing import list_stop_gradients
from .remove import remove_in_place, remove_stop_gradient
from .scale import scale_gradient, scale_in_place
from .straight_through import straight_through, straight_through_in_place
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

__all__ = [
    "ModelInput",
    "read_model",
    "insert_stop_gradient",
    "remove_stop_gradient",
    "list_stop_gradients",
    "scale_gradient",
    "straight_through",
    "insert_in_place",
    "scale_in_place",
    "straight_through_in_place",
    "ScaleReport",
    "StraightThroughReport",
    "ConstructInfo",
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
