"""The frozen report dataclasses the passes return: ``to_dict()`` for JSON, ``summary()`` for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._names import DOMAIN
from .._reports import ReportFields, json_ready

__all__ = [
    "ConstructInfo",
    "InsertReport",
    "Insertion",
    "ListReport",
    "Removal",
    "RemoveReport",
    "Skipped",
    "StopGradientInfo",
]


_Fields = ReportFields


@dataclass(frozen=True)
class Insertion(_Fields):
    """One StopGradient now guarding ``tensor`` (new, or an existing one reused)."""

    tensor: str
    node: str
    output: str
    consumers: tuple[str, ...]
    graph: str = ""
    reused: bool = False


@dataclass(frozen=True)
class Skipped(_Fields):
    """A requested tensor that needed no change, and why."""

    tensor: str
    reason: str
    graph: str = ""


@dataclass(frozen=True)
class InsertReport:
    """What :func:`insert_stop_gradient` changed."""

    inserted: tuple[Insertion, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    opset_added: bool = False

    @property
    def modified(self) -> bool:
        return bool(self.inserted)

    def to_dict(self) -> dict[str, Any]:
        return {"modified": self.modified, **json_ready(asdict(self))}

    def summary(self) -> str:
        lines = []
        for item in self.inserted:
            where = f" in {item.graph}" if item.graph else ""
            verb = "reused" if item.reused else "inserted"
            readers = ", ".join(item.consumers)
            lines.append(f"{verb} {item.node}{where}: {item.tensor} -> {item.output} (read by {readers})")
        for skip in self.skipped:
            where = f" in {skip.graph}" if skip.graph else ""
            lines.append(f"unchanged {skip.tensor}{where}: {skip.reason}")
        if not self.inserted:
            lines.append("nothing to do: the model is unchanged")
        return "\n".join(lines)


@dataclass(frozen=True)
class Removal(_Fields):
    """One StopGradient taken out (``as_identity``: replaced by an Identity)."""

    node: str
    input: str
    output: str
    consumers: tuple[str, ...]
    graph: str = ""
    as_identity: bool = False
    reason: str = ""


@dataclass(frozen=True)
class RemoveReport:
    """What :func:`remove_stop_gradient` changed."""

    removed: tuple[Removal, ...] = ()
    opset_removed: bool = False

    @property
    def modified(self) -> bool:
        return bool(self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"modified": self.modified, **json_ready(asdict(self))}

    def summary(self) -> str:
        lines = []
        for item in self.removed:
            where = f" in {item.graph}" if item.graph else ""
            if item.as_identity:
                why = f" ({item.reason})" if item.reason else ""
                lines.append(f"replaced {item.node}{where} by Identity{why}")
            else:
                readers = ", ".join(item.consumers) or "nothing"
                what = f" ({item.reason})" if item.reason else ""
                lines.append(
                    f"removed {item.node}{where}{what}: {item.output} -> {item.input} (for {readers})"
                )
        if not self.removed:
            lines.append("no StopGradient to remove: the model is unchanged")
        elif self.opset_removed:
            lines.append(f"dropped the {DOMAIN} opset import: the model no longer needs the op library")
        return "\n".join(lines)


@dataclass(frozen=True)
class StopGradientInfo(_Fields):
    """One StopGradient node: where it is and which nodes read its output."""

    node: str
    input: str
    output: str
    consumers: tuple[str, ...]
    graph: str = ""


@dataclass(frozen=True)
class ListReport:
    """Every StopGradient, and the float initializers no gradient reaches because of them.

    ``frozen_parameters`` reach the graph outputs only through StopGradient nodes;
    ``partially_blocked_parameters`` still get a gradient, but some of their paths are stopped.
    """

    stops: tuple[StopGradientInfo, ...] = ()
    frozen_parameters: tuple[str, ...] = ()
    partially_blocked_parameters: tuple[str, ...] = ()
    #: Gradient-scale and straight-through constructs (their StopGradient nodes are not in ``stops``).
    constructs: tuple[ConstructInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stop_gradients": [item.to_dict() for item in self.stops],
            "constructs": [item.to_dict() for item in self.constructs],
            "frozen_parameters": list(self.frozen_parameters),
            "partially_blocked_parameters": list(self.partially_blocked_parameters),
        }

    def summary(self) -> str:
        if not self.stops and not self.constructs:
            return "no StopGradient nodes"
        lines = [f"{len(self.stops)} StopGradient node(s):"]
        for item in self.stops:
            where = f" [{item.graph}]" if item.graph else ""
            readers = ", ".join(item.consumers) or "nothing"
            lines.append(f"  {item.node}{where}: {item.input} -> {item.output}, read by {readers}")
        if self.constructs:
            lines.append(f"{len(self.constructs)} gradient construct(s):")
            lines.extend(f"  {item.describe()}" for item in self.constructs)
        lines.append(_parameter_line("frozen (no gradient reaches them)", self.frozen_parameters))
        if self.partially_blocked_parameters:
            lines.append(_parameter_line("partly blocked (still trained)", self.partially_blocked_parameters))
        return "\n".join(lines)


def _parameter_line(title: str, names: tuple[str, ...], limit: int = 20) -> str:
    if not names:
        return f"{title}: none"
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"{title}: {len(names)}: {shown}{more}"


@dataclass(frozen=True)
class ConstructInfo(_Fields):
    """One gradient-scale or straight-through construct, seen as a single unit.

    ``kind`` is "gradient_scale" or "straight_through"; ``name`` the common prefix of its
    nodes; its ``output`` is read by ``consumers`` instead of ``input`` (scale) or
    ``quantized`` (straight-through, whose gradient goes to ``input``).
    """

    kind: str
    name: str
    input: str
    output: str
    factor: float
    quantized: str
    consumers: tuple[str, ...]
    nodes: tuple[str, ...]

    def describe(self) -> str:
        readers = ", ".join(self.consumers) or "nothing"
        if self.kind == "gradient_scale":
            return f"{self.name}: gradient of {self.input} scaled by {self.factor:g} (read by {readers})"
        return (
            f"{self.name}: straight-through, forward {self.quantized}, gradient to {self.input} "
            f"as identity (read by {readers})"
        )
