"""List the StopGradient nodes of a model and the parameters they cut off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._flow import analyze_gradient_flow
from ._model import ModelInput, read_model
from .remove import find_stops, readers_of

__all__ = ["StopGradientInfo", "ListReport", "list_stop_gradients"]


@dataclass(frozen=True)
class StopGradientInfo:
    """One StopGradient node: where it is and which nodes read its output."""

    node: str
    input: str
    output: str
    consumers: tuple[str, ...]
    graph: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "input": self.input,
            "output": self.output,
            "consumers": list(self.consumers),
            "graph": self.graph,
        }


@dataclass(frozen=True)
class ListReport:
    """Every StopGradient, and the float initializers no gradient reaches because of them.

    ``frozen_parameters`` reach the graph outputs only through StopGradient nodes;
    ``partially_blocked_parameters`` still get a gradient, but some of their paths are stopped.
    """

    stops: tuple[StopGradientInfo, ...] = ()
    frozen_parameters: tuple[str, ...] = ()
    partially_blocked_parameters: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stop_gradients": [item.to_dict() for item in self.stops],
            "frozen_parameters": list(self.frozen_parameters),
            "partially_blocked_parameters": list(self.partially_blocked_parameters),
        }

    def summary(self) -> str:
        if not self.stops:
            return "no StopGradient nodes"
        lines = [f"{len(self.stops)} StopGradient node(s):"]
        for item in self.stops:
            where = f" [{item.graph}]" if item.graph else ""
            readers = ", ".join(item.consumers) or "nothing"
            lines.append(f"  {item.node}{where}: {item.input} -> {item.output}, read by {readers}")
        lines.append(_parameter_line("frozen (no gradient reaches them)", self.frozen_parameters))
        if self.partially_blocked_parameters:
            lines.append(
                _parameter_line("partly blocked (still trained)", self.partially_blocked_parameters)
            )
        return "\n".join(lines)


def _parameter_line(title: str, names: tuple[str, ...], limit: int = 20) -> str:
    if not names:
        return f"{title}: none"
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"{title}: {len(names)}: {shown}{more}"


def list_stop_gradients(model: ModelInput) -> ListReport:
    """Describe every StopGradient in ``model`` (a ModelProto, path or graphsurgeon Graph)."""
    proto = read_model(model)
    _, stops = find_stops(proto)
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
    flow = analyze_gradient_flow(proto)
    return ListReport(infos, flow.frozen, flow.partially_blocked)
