"""Insert and remove as ``onnx_ir`` passes, to compose with onnx-ir / onnxscript pipelines.

Each is an ``onnx_ir.passes.FunctionalPass``: calling it on an ``onnx_ir.Model`` returns
a :class:`StopGradientPassResult` (``model``, ``modified``, and the pass's report) and
leaves the given model unchanged. The work is done by :func:`~.insert.insert_in_place` /
:func:`~.remove.remove_in_place` on the serialized model (the fast protobuf path)::

    import onnx_ir as ir
    from onnx_stopgrad.passes.ir import InsertStopGradientPass

    result = ir.passes.PassManager([InsertStopGradientPass(["h"])])(ir.load("model.onnx"))

Importing this module imports onnx_ir (``pip install onnx-ir``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import onnx_ir as ir

from .insert import insert_in_place
from .remove import remove_in_place
from .reports import InsertReport, RemoveReport

__all__ = ["InsertStopGradientPass", "RemoveStopGradientPass", "StopGradientPassResult"]


@dataclasses.dataclass
class StopGradientPassResult(ir.passes.PassResult):
    """``onnx_ir``'s pass result plus what the pass did."""

    report: InsertReport | RemoveReport | None = None


class InsertStopGradientPass(ir.passes.FunctionalPass):
    """Stop the gradient at the tensors ``at`` (optionally only into ``consumers[tensor]``)."""

    def __init__(self, at: str | Sequence[str], consumers: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.at = [at] if isinstance(at, str) else list(at)
        self.consumers = consumers

    def call(self, model: ir.Model) -> StopGradientPassResult:
        proto = ir.serde.serialize_model(model)
        report = insert_in_place(proto, self.at, self.consumers)
        return StopGradientPassResult(ir.serde.deserialize_model(proto), report.modified, report)


class RemoveStopGradientPass(ir.passes.FunctionalPass):
    """Take StopGradient nodes out (all, or those named in ``at``).

    See :func:`~.remove.remove_stop_gradient`.
    """

    def __init__(self, at: str | Sequence[str] | None = None, to_identity: bool = False) -> None:
        super().__init__()
        self.at = at
        self.to_identity = to_identity

    def call(self, model: ir.Model) -> StopGradientPassResult:
        proto = ir.serde.serialize_model(model)
        report = remove_in_place(proto, self.at, self.to_identity)
        return StopGradientPassResult(ir.serde.deserialize_model(proto), report.modified, report)
