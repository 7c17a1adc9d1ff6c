"""What the public functions accept: a ModelProto, a path, an ``onnx_ir.Model`` or an
onnx-graphsurgeon Graph.

A caller's ModelProto is copied, never changed; a path is read without its external
data (see :mod:`onnx_stopgrad._io`); one the ONNX checker rejects is accepted with a
warning, and the result must be no less valid (see :mod:`._validity`); a graphsurgeon
Graph is exported to a proto and the result imported back, and so is an ``onnx_ir.Model``
(serialized, then deserialized: the caller's object is never changed), so callers get the
kind of object they passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeGuard, Union

import onnx

from .._io import load_model
from ..errors import InvalidModelError
from ._validity import accept_input, check_output

__all__ = ["ModelInput", "is_graphsurgeon_graph", "is_ir_model", "open_model", "read_model"]

if TYPE_CHECKING:
    import onnx_graphsurgeon  # type: ignore[import-untyped]
    import onnx_ir

#: A ModelProto, a path to an .onnx file, an ``onnx_ir.Model`` or an ``onnx_graphsurgeon.Graph``.
ModelInput = Union[onnx.ModelProto, str, "os.PathLike[str]", "onnx_ir.Model", "onnx_graphsurgeon.Graph"]


def is_graphsurgeon_graph(model: object) -> TypeGuard[onnx_graphsurgeon.Graph]:
    return type(model).__module__.startswith("onnx_graphsurgeon") and hasattr(model, "nodes")


def is_ir_model(model: object) -> TypeGuard[onnx_ir.Model]:
    """Whether ``model`` is an ``onnx_ir.Model`` (onnx_ir is imported only then)."""
    return type(model).__module__.startswith("onnx_ir") and type(model).__name__ == "Model"


def read_model(model: ModelInput) -> onnx.ModelProto:
    """The model as a proto, for reading only (no copy of a caller's proto)."""
    if is_ir_model(model):
        import onnx_ir as ir

        return ir.serde.serialize_model(model)
    if is_graphsurgeon_graph(model):
        import onnx_graphsurgeon as gs

        return gs.export_onnx(model)
    if isinstance(model, (onnx.ModelProto, str, os.PathLike)):
        return load_model(model)[0]
    raise InvalidModelError(
        "expected an onnx.ModelProto, a path, an onnx_ir.Model or an onnx_graphsurgeon.Graph, "
        f"got {type(model).__name__}"
    )


def open_model(model: ModelInput) -> tuple[onnx.ModelProto, Callable[[onnx.ModelProto], Any]]:
    """A proto the caller may change freely, and how to turn it back into the input's kind."""
    if is_ir_model(model):
        import onnx_ir as ir

        return ir.serde.serialize_model(model), ir.serde.deserialize_model
    if is_graphsurgeon_graph(model):
        import onnx_graphsurgeon as gs

        return gs.export_onnx(model), gs.import_onnx
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, _same
    proto = read_model(model)  # raises for a type it does not know
    assert isinstance(model, (str, os.PathLike))
    problem = accept_input(model, strict=False)  # accepted with a warning: see ._validity

    def back(changed: onnx.ModelProto) -> onnx.ModelProto:
        check_output(changed, problem)
        return changed

    return proto, back


def _same(model: onnx.ModelProto) -> onnx.ModelProto:
    return model
