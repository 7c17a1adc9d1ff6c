"""Module paths as cut points: ``bert.encoder.layer.1`` instead of exporter tensor names.

:class:`ModuleTree` reads the module of every node from what the exporter left in the graph
(TorchScript's ``/``-scoped node names, the dynamo exporter's ``pkg.torch.onnx.name_scopes``
metadata); :func:`module_outputs` lists what a module hands to the rest of the model;
:func:`cut_points` describes every module as a place to stop. Stopping at a module goes
through ``insert_stop_gradient(model, module=...)``.
"""

from __future__ import annotations

from ..errors import TensorNotFoundError
from ..passes import ModelInput, read_model
from ._plan import ModuleStops, plan_module_stops
from ._points import CutPoint, OutputInfo, PointsReport, cut_points
from ._tree import Module, ModuleOutput, ModuleTree

__all__ = [
    "CutPoint",
    "Module",
    "ModuleOutput",
    "ModuleStops",
    "ModuleTree",
    "OutputInfo",
    "PointsReport",
    "cut_points",
    "module_outputs",
    "plan_module_stops",
]


def module_outputs(model: ModelInput, module: str) -> tuple[ModuleOutput, ...]:
    """The tensors module ``module`` (a PyTorch path such as ``bert.encoder.layer.1``) produces
    and something outside it reads, with those readers; graph outputs included."""
    tree = ModuleTree(read_model(model))
    paths = tree.resolve([module])
    if len(paths) != 1:
        raise TensorNotFoundError(
            f"{module!r} matches {len(paths)} modules; name one: {', '.join(paths[:5])}"
        )
    return tree.outputs(paths[0])
