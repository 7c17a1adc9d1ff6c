"""``points``: every module of a model as a place to stop, with what stopping there freezes."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from ..errors import StopGradError, TensorNotFoundError
from ..graph import FLOAT_TYPES, analyze_gradient_flow, hollow_copy
from ..passes import ModelInput, insert_in_place, read_model
from ._plan import plan_module_stops
from ._tree import NO_SCOPES_MESSAGE, ModuleTree
from ._types import dtype_name, tensor_types

__all__ = ["CutPoint", "OutputInfo", "PointsReport", "cut_points"]


@dataclass(frozen=True)
class OutputInfo:
    """One output of a module: dtype and shape (symbolic dims as names, unknown as None)."""

    tensor: str
    dtype: str
    shape: tuple[int | str | None, ...] | None
    readers: tuple[str, ...]
    graph_output: bool


@dataclass(frozen=True)
class CutPoint:
    """A module, and what ``--module PATH`` would freeze (None when it cannot be stopped)."""

    path: str
    class_name: str
    depth: int
    outputs: tuple[OutputInfo, ...]
    #: Float initializers read inside the module, and their bytes.
    parameters: int
    parameter_bytes: int
    frozen: int | None = None
    frozen_bytes: int | None = None
    trainable: int | None = None
    trainable_bytes: int | None = None
    #: Why the module cannot be stopped (empty when it can).
    note: str = ""


@dataclass(frozen=True)
class PointsReport:
    """The modules of a model as cut points; ``total_*`` count every float initializer."""

    points: tuple[CutPoint, ...]
    total_parameters: int
    total_bytes: int
    #: Modules below the depth limit, not described.
    deeper: int = 0

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_text(self) -> str:
        """The modules as an indented tree."""
        total = f"{self.total_parameters} parameters ({_size(self.total_bytes)})"
        lines = [f"{len(self.points) + self.deeper} modules; the model has {total}"]
        for point in self.points:
            pad = "  " * (point.depth - 1)
            kind = f" ({point.class_name})" if point.class_name else ""
            plural = "" if point.parameters == 1 else "s"
            size = _size(point.parameter_bytes)
            lines.append(f"{pad}{point.path}{kind}: {point.parameters} parameter{plural} ({size})")
            for out in point.outputs:
                shape = (
                    "?"
                    if out.shape is None
                    else "[" + ", ".join("?" if d is None else str(d) for d in out.shape) + "]"
                )
                where = " (graph output)" if out.graph_output else ""
                lines.append(f"{pad}  output {out.tensor} {out.dtype} {shape}{where}")
            if point.frozen is not None:
                lines.append(
                    f"{pad}  stop here: freezes {point.frozen} ({_size(point.frozen_bytes or 0)}), "
                    f"{point.trainable} still train ({_size(point.trainable_bytes or 0)})"
                )
            else:
                lines.append(f"{pad}  cannot stop here: {point.note}")
        if self.deeper:
            lines.append(f"... and {self.deeper} deeper modules (--depth N shows more, --json all)")
        return "\n".join(lines)


def cut_points(model: ModelInput, depth: int | None = None) -> PointsReport:
    """Describe every module of ``model`` down to ``depth`` levels (None: all) as a cut point.

    Raises TensorNotFoundError when the model has no scope information.
    """
    proto = read_model(model)
    tree = ModuleTree(proto)
    if not tree.has_scopes:
        raise TensorNotFoundError(NO_SCOPES_MESSAGE)
    types = tensor_types(proto)
    sizes = {t.name: _nbytes(t) for t in proto.graph.initializer if t.data_type in FLOAT_TYPES}
    skeleton = hollow_copy(proto)
    points = []
    deeper = 0
    for path in tree.paths():
        level = _depth(tree, path)
        if depth is not None and level > depth:
            deeper += 1
            continue
        outputs = tuple(_output_info(o, types) for o in tree.outputs(path))
        params = _parameters_inside(tree, path, sizes)
        point = CutPoint(
            path, tree.modules[path].class_name, level, outputs, len(params), sum(sizes[p] for p in params)
        )
        points.append(_with_freeze(point, skeleton, tree, sizes, types))
    return PointsReport(tuple(points), len(sizes), sum(sizes.values()), deeper)


def _with_freeze(
    point: CutPoint, skeleton: onnx.ModelProto, tree: ModuleTree, sizes: dict[str, int], types: dict[str, Any]
) -> CutPoint:
    work = onnx.ModelProto()
    work.CopyFrom(skeleton)
    try:
        stops = plan_module_stops(work, [point.path], tree, types)
        insert_in_place(work, list(stops.consumers), stops.consumers)
        flow = analyze_gradient_flow(work)
    except StopGradError as exc:
        return _replace(point, note=str(exc))
    trainable = [p for p in flow.trainable if p in sizes]
    frozen = [p for p in flow.frozen if p in sizes]
    return _replace(
        point,
        frozen=len(frozen), frozen_bytes=sum(sizes[p] for p in frozen),
        trainable=len(trainable), trainable_bytes=sum(sizes[p] for p in trainable),
    )  # fmt: skip


def _replace(point: CutPoint, **changes: Any) -> CutPoint:
    return CutPoint(**{**asdict(point), "outputs": point.outputs, **changes})


def _parameters_inside(tree: ModuleTree, path: str, sizes: dict[str, int]) -> list[str]:
    found: dict[str, None] = {}
    for position in tree.modules[path].nodes:
        found.update((name, None) for name in tree.entries[position].node.input if name in sizes)
    return list(found)


def _output_info(output: Any, types: dict[str, Any]) -> OutputInfo:
    elem_type, shape = types.get(output.tensor, (0, None))
    return OutputInfo(output.tensor, dtype_name(elem_type), shape, output.readers, output.graph_output)


def _depth(tree: ModuleTree, path: str) -> int:
    level, parent = 0, tree.modules[path].parent
    while parent is not None:
        level, parent = level + 1, tree.modules[parent].parent
    return level


def _nbytes(tensor: onnx.TensorProto) -> int:
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(math.prod(tensor.dims)) * itemsize


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
