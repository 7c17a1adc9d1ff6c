"""Reports of :func:`scale_gradient` and :func:`straight_through`: ``to_dict()`` and ``summary()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._reports import json_ready
from .reports import ConstructInfo, Insertion

__all__ = ["ScaleReport", "StraightThroughReport"]


@dataclass(frozen=True)
class ScaleReport:
    """What :func:`~onnx_stopgrad.passes.scale_gradient` changed.

    ``construct`` is the new gradient-scale construct; a factor of 0 inserts a plain
    StopGradient instead (``stop``); ``skipped`` says why nothing changed.
    """

    tensor: str
    factor: float
    construct: ConstructInfo | None = None
    stop: Insertion | None = None
    skipped: str = ""
    opset_added: bool = False

    @property
    def modified(self) -> bool:
        return self.construct is not None or self.stop is not None

    def to_dict(self) -> dict[str, Any]:
        return {"modified": self.modified, **json_ready(asdict(self))}

    def summary(self) -> str:
        if self.construct is not None:
            return f"inserted {self.construct.describe()}"
        if self.stop is not None:
            readers = ", ".join(self.stop.consumers)
            verb = "reused" if self.stop.reused else "inserted"
            return f"factor 0 is a stop: {verb} {self.stop.node} at {self.tensor} (read by {readers})"
        return f"unchanged {self.tensor}: {self.skipped}\nnothing to do: the model is unchanged"


@dataclass(frozen=True)
class StraightThroughReport:
    """What :func:`~onnx_stopgrad.passes.straight_through` changed.

    ``nodes`` are the node(s) passed straight through, first to last.
    """

    nodes: tuple[str, ...]
    construct: ConstructInfo | None = None
    skipped: str = ""
    opset_added: bool = False

    @property
    def modified(self) -> bool:
        return self.construct is not None

    def to_dict(self) -> dict[str, Any]:
        return {"modified": self.modified, **json_ready(asdict(self))}

    def summary(self) -> str:
        span = " .. ".join(self.nodes)
        if self.construct is not None:
            return f"inserted {self.construct.describe()} [around {span}]"
        return f"unchanged {span}: {self.skipped}\nnothing to do: the model is unchanged"
