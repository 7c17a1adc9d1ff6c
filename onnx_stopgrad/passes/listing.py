"""List the StopGradient nodes of a model, its gradient constructs, and the parameters cut off."""

from __future__ import annotations

from ..graph import analyze_gradient_flow
from . import _constructs
from ._model import ModelInput, read_model
from .remove import find_stops, readers_of, stops_outside_constructs
from .reports import ListReport, StopGradientInfo

__all__ = ["list_stop_gradients"]


def list_stop_gradients(model: ModelInput) -> ListReport:
    """Describe every StopGradient in ``model`` (a ModelProto, path or graphsurgeon Graph)."""
    proto = read_model(model)
    _, every_stop = find_stops(proto)  # checks the model's structure first
    constructs = _constructs.find_constructs(proto)
    stops = stops_outside_constructs(every_stop, constructs)
    infos = tuple(
        StopGradientInfo(
            node=stop.label,
            input=stop.node.input[0] if stop.node.input else "",
            output=stop.node.output[0] if stop.node.output else "",
            consumers=tuple(dict.fromkeys(read.label for read in readers_of(stop))),
            graph=stop.scope.path,
        )
        for stop in stops
    )
    flow = analyze_gradient_flow(_constructs.gradient_view(proto))
    return ListReport(infos, flow.frozen, flow.partially_blocked, _constructs.describe(proto, constructs))
