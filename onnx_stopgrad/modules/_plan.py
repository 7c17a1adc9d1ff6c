"""Turn module paths into the tensors and readers :func:`~onnx_stopgrad.insert_stop_gradient` stops."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from ..errors import InvalidModelError
from ..graph import FLOAT_TYPES
from ._tree import ModuleOutput, ModuleTree
from ._types import TensorType, tensor_types

__all__ = ["ModuleStops", "plan_module_stops"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModuleStops:
    """The stops that cut the chosen modules off from the rest of the model."""

    modules: tuple[str, ...]
    #: Tensors to stop, each for its readers outside the module only (none left to stop:
    #: a StopGradient reads it already; insert reports it as skipped).
    consumers: dict[str, tuple[str, ...]]


def plan_module_stops(
    model: onnx.ModelProto,
    modules: Iterable[str],
    tree: ModuleTree | None = None,
    types: Mapping[str, TensorType] | None = None,
) -> ModuleStops:
    """Stops at every floating-point output of each module in ``modules`` (paths or globs).

    Raises TensorNotFoundError for an unknown module (naming the closest ones) or a model
    without scope information, InvalidModelError for a module with nothing to stop.
    ``tree`` and ``types`` (:func:`~._types.tensor_types`) may be passed in when known.
    """
    names = list(modules)
    if not names:
        return ModuleStops((), {})
    tree = tree if tree is not None else ModuleTree(model)
    paths = tree.resolve(names)
    types = types if types is not None else tensor_types(model)
    consumers: dict[str, dict[str, None]] = {}
    for path in paths:
        outputs = tree.outputs(path)
        stoppable = [o for o in outputs if (o.readers or o.stopped) and _may_carry_gradient(o, types)]
        if not stoppable:
            raise InvalidModelError(_nothing_to_stop(path, outputs))
        ends = [o.tensor for o in stoppable if o.graph_output]
        if ends:
            log.warning(
                "module %s: %s %s also a graph output; it is stopped for the nodes reading it, "
                "not for a loss on the output itself",
                path, ", ".join(ends), "is" if len(ends) == 1 else "are",
            )  # fmt: skip
        for output in stoppable:
            consumers.setdefault(output.tensor, {}).update(dict.fromkeys(output.readers))
    return ModuleStops(tuple(paths), {tensor: tuple(readers) for tensor, readers in consumers.items()})


def _may_carry_gradient(output: ModuleOutput, types: Mapping[str, tuple[int, object]]) -> bool:
    known = types.get(output.tensor)
    return known is None or not known[0] or known[0] in FLOAT_TYPES


def _nothing_to_stop(path: str, outputs: Sequence[ModuleOutput]) -> str:
    if not outputs:
        return (
            f"module {path!r} has no outputs: nothing outside it reads what it computes; "
            "choose another module"
        )
    ends = [o.tensor for o in outputs if o.graph_output and not o.readers]
    if ends:
        return (
            f"module {path!r} ends the model: its outputs ({', '.join(ends[:3])}) are graph outputs that no "
            "other node reads, so stopping there would leave nothing to train; choose a module inside it"
        )
    shown = ", ".join(o.tensor for o in outputs[:3])
    return (
        f"module {path!r} hands only integer or boolean tensors to the rest ({shown}): "
        "no gradient flows there"
    )
