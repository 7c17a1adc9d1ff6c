"""``gradient_scale`` and ``straight_through`` for PyTorch modules, and their ONNX export.

In eager mode both are autograd Functions: forward returns the value unchanged
(``x``, or ``q``), backward multiplies the gradient by ``factor`` (or hands it to ``x``
unchanged, and nothing to ``q``). Under :func:`onnx_stopgrad.torch.export` each call
becomes a placeholder node (``GradientScale`` / ``StraightThrough`` of the project's
domain): the TorchScript exporter through the Functions' ``symbolic``, the dynamo
exporter through custom ops and :func:`translations`. :func:`expand_placeholders` then
replaces each placeholder with the construct ``onnx-stopgrad scale`` /
``straight-through`` build, so both routes give the same graph.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import onnx
import onnx.defs
import torch

from ._names import DOMAIN, OPSET_VERSION
from .errors import ConstructError
from .passes import _constructs as family
from .schema import tensor_types

__all__ = ["expand_placeholders", "gradient_scale", "straight_through", "translations"]

log = logging.getLogger(__name__)

_SCALE_OP = "GradientScale"
_STRAIGHT_OP = "StraightThrough"


class _GradientScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None

    @staticmethod
    def symbolic(g: Any, x: Any, factor: float) -> Any:
        return g.op(f"{DOMAIN}::{_SCALE_OP}", x, factor_f=float(factor)).setType(x.type())


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return q.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None

    @staticmethod
    def symbolic(g: Any, x: Any, q: Any) -> Any:
        return g.op(f"{DOMAIN}::{_STRAIGHT_OP}", x, q).setType(q.type())


@functools.cache
def _custom_ops() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """``onnx_stopgrad::gradient_scale`` and ``::straight_through`` for the dynamo exporter."""

    @torch.library.custom_op(f"{DOMAIN}::gradient_scale", mutates_args=())
    def scale_op(x: torch.Tensor, factor: float) -> torch.Tensor:
        return x.clone()

    @scale_op.register_fake
    def _(x: torch.Tensor, factor: float) -> torch.Tensor:
        return torch.empty_like(x)

    def setup_scale(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.factor = inputs[1]

    scale_op.register_autograd(lambda ctx, grad: (grad * ctx.factor, None), setup_context=setup_scale)

    @torch.library.custom_op(f"{DOMAIN}::straight_through", mutates_args=())
    def straight_op(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return q.clone()

    @straight_op.register_fake
    def _(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(q)

    straight_op.register_autograd(lambda ctx, grad: (grad, None))
    return scale_op, straight_op


def gradient_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged; the gradient flowing back through it is multiplied by ``factor``.

    ``factor = -lambda`` is DANN's gradient-reversal layer. Exports (with
    :func:`onnx_stopgrad.torch.export`) as the construct ``onnx-stopgrad scale`` inserts.
    """
    factor = float(factor)
    if not math.isfinite(factor):
        raise ConstructError(f"gradient factor {factor} is not a finite number")
    if not x.is_floating_point():
        raise ConstructError(f"gradient_scale needs a floating-point tensor, got {x.dtype}")
    if torch.compiler.is_exporting():
        return _custom_ops()[0](x, factor)
    return _GradientScale.apply(x, factor)


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The value of ``q`` with the gradient of the identity to ``x`` (nothing flows into ``q``).

    ``straight_through(x, torch.round(x))`` is a straight-through rounding. ``q`` must
    have ``x``'s shape and dtype. Exports like ``onnx-stopgrad straight-through``.
    """
    if not torch.jit.is_tracing() and (q.shape != x.shape or q.dtype != x.dtype or not x.is_floating_point()):
        raise ConstructError(
            f"straight_through needs a float x and a q of the same shape and dtype; got x {x.dtype}"
            f"{list(x.shape)}, q {q.dtype}{list(q.shape)}"
        )
    if torch.compiler.is_exporting():
        return _custom_ops()[1](x, q)
    return _StraightThrough.apply(x, q)


def _same_type_as(index: int) -> Callable[[Any], None]:
    def infer(ctx: Any) -> None:
        if ctx.get_num_inputs() > index and ctx.has_input(index):
            input_type = ctx.get_input_type(index)
            if input_type is not None and input_type.WhichOneof("value") is not None:
                ctx.set_output_type(0, input_type)

    return infer


@functools.cache
def _register_placeholder_schemas() -> None:
    """Schemas for the placeholders: the dynamo exporter will not emit an op without one."""
    param = onnx.defs.OpSchema.FormalParameter
    types = [("T", [t for t in tensor_types() if "float" in t], "Floating-point tensors.")]
    attr = onnx.defs.OpSchema.Attribute("factor", onnx.defs.OpSchema.AttrType.FLOAT, "Gradient factor.")
    schemas = [
        onnx.defs.OpSchema(
            _SCALE_OP, DOMAIN, OPSET_VERSION, "Export-time placeholder of a gradient-scale construct.",
            inputs=[param("x", "T")], outputs=[param("y", "T")], type_constraints=types, attributes=[attr],
        ),
        onnx.defs.OpSchema(
            _STRAIGHT_OP, DOMAIN, OPSET_VERSION, "Export-time placeholder of a straight-through construct.",
            inputs=[param("x", "T"), param("q", "T")], outputs=[param("y", "T")], type_constraints=types,
        ),
    ]  # fmt: skip
    for schema, source in zip(schemas, (0, 1), strict=True):
        if onnx.defs.has(schema.name, OPSET_VERSION, DOMAIN):
            continue
        if hasattr(schema, "set_type_and_shape_inference_function"):
            schema.set_type_and_shape_inference_function(_same_type_as(source))
        onnx.defs.register_schema(schema)


def translations(opset: Any) -> dict[Callable[..., Any], Callable[..., Any]]:
    """``custom_translation_table`` entries emitting the placeholders (dynamo exporter)."""
    _custom_ops()
    _register_placeholder_schemas()

    def scale(x: Any, factor: float) -> Any:
        return getattr(opset, _SCALE_OP)(x, factor=float(factor))

    def straight(x: Any, q: Any) -> Any:
        return getattr(opset, _STRAIGHT_OP)(x, q)

    ops = torch.ops.onnx_stopgrad
    return {ops.gradient_scale.default: scale, ops.straight_through.default: straight}


def expand_placeholders(model: onnx.ModelProto) -> int:
    """Replace each placeholder node by its construct, in place; returns how many there were."""
    graph = model.graph
    count = 0
    index = 0
    while index < len(graph.node):
        node = graph.node[index]
        if node.domain != DOMAIN or node.op_type not in (_SCALE_OP, _STRAIGHT_OP):
            index += 1
            continue
        x, y = node.input[0], node.output[0]
        if node.op_type == _SCALE_OP:
            factor = next((a.f for a in node.attribute if a.name == "factor"), None)
            if factor is None:
                raise ConstructError(f"exported {_SCALE_OP} node {node.name!r} has no factor; re-export")
            elem_type = family.check_float(model, x, "tensor")
            prefix = family.allocate_prefix(model, x, family.SCALE)
            nodes = family.scale_nodes(prefix, x, y, factor, elem_type)
        else:
            _warn_if_folded(model, x, node.input[1])
            prefix = family.allocate_prefix(model, x, family.STRAIGHT_THROUGH)
            nodes = family.straight_through_nodes(prefix, x, node.input[1], y)
        del graph.node[index]
        for new in reversed(nodes):
            graph.node.insert(index, new)
        index += len(nodes)
        count += 1
    return count


def _warn_if_folded(model: onnx.ModelProto, x: str, q: str) -> None:
    """A ``q`` the exporter computed from a weight and folded would not follow it in training."""
    if x not in {t.name for t in model.graph.initializer}:
        return
    producer = {name: node for node in model.graph.node for name in node.output}
    seen, pending = set(), [q]
    while pending:
        name = pending.pop()
        if name == x:
            return
        if name not in seen and name in producer:
            seen.add(name)
            pending.extend(producer[name].input)
    log.warning(
        "straight_through(%s, q): the exporter folded q into constants, so it will not change as %s "
        "trains; export with optimize=False (dynamo) or do_constant_folding=False (TorchScript)",
        x,
        x,
    )
