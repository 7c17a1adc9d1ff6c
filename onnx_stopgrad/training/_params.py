"""Which parameters train: ``requires_grad`` / ``frozen_params`` checked against the graph."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from .._flow import FLOAT_TYPES, analyze_gradient_flow, is_stop_gradient, node_reads
from ..errors import TensorNotFoundError, TrainingError

__all__ = ["NON_DIFFERENTIABLE_INPUTS", "ParameterPlan", "differentiable_tensors", "plan_parameters"]

#: Inputs ONNX Runtime 1.19 computes no gradient for (op_type -> input indices): its
#: gradient builder's stop-gradient edges (``STOP_GRADIENT_EDGES`` in
#: orttraining/core/framework/gradient_graph_builder.h), plus inputs it has no gradient
#: builder for (``Pow``'s exponent). A float initializer read only at such inputs, or only
#: on paths through them, is a constant to ORT: it cannot be trained.
NON_DIFFERENTIABLE_INPUTS: dict[str, frozenset[int]] = {
    op: frozenset(indices)
    for op, indices in {
        "Not": (0,), "And": (0, 1), "Or": (0, 1), "Xor": (0, 1), "Equal": (0, 1), "Less": (0, 1),
        "LessOrEqual": (0, 1), "Greater": (0, 1), "GreaterOrEqual": (0, 1), "IsInf": (0,),
        "IsNaN": (0,), "NonZero": (0,), "Shape": (0,), "Size": (0,), "ConstantOfShape": (0,),
        "BatchNormalization": (3, 4), "Pow": (1,), "Gather": (1,), "GatherElements": (1,),
        "GatherND": (1,), "Reshape": (1,), "Expand": (1,), "Dropout": (1, 2), "Slice": (1, 2, 3, 4),
        "SoftmaxCrossEntropyLoss": (1, 2), "Scatter": (1,), "ScatterElements": (1,), "ScatterND": (1,),
        "OneHot": (0, 1, 2), "Where": (0,), "Range": (0, 1, 2), "Tile": (1,), "TopK": (1,),
        "Squeeze": (1,), "Unsqueeze": (1,), "ReduceSum": (1,), "Split": (1,), "Clip": (1, 2),
    }.items()
}  # fmt: skip


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParameterPlan:
    """The lists handed to ORT, plus what the defaults were derived from."""

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    #: True when ``requires_grad`` was derived from the graph (not given by the user).
    derived: bool
    #: Float initializers that reach the loss, but only through inputs ORT does not
    #: differentiate: left as constants by the derived lists (neither trained nor frozen).
    constants: tuple[str, ...] = ()


def plan_parameters(
    model: onnx.ModelProto,
    requires_grad: Sequence[str] | None,
    frozen_params: Sequence[str] | None,
    targets: Sequence[str],
) -> ParameterPlan:
    """Check the user's lists, or derive them: train what reaches the loss around the stops."""
    params = {t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    frozen_given = list(dict.fromkeys(frozen_params or ()))
    _check_known(frozen_given, params, "frozen_params")
    flow = analyze_gradient_flow(model, targets)
    if requires_grad is not None:
        wanted = list(dict.fromkeys(requires_grad))
        _check_known(wanted, params, "requires_grad")
        both = sorted(set(wanted) & set(frozen_given))
        if both:
            raise TrainingError(f"{', '.join(both)} listed both in requires_grad and frozen_params; keep one")
        for name in wanted:
            if name in flow.frozen:
                stops = ", ".join(repr(s) for s in flow.blocking_stops.get(name, ()))
                raise TrainingError(
                    f"parameter {name!r} reaches the loss only through StopGradient {stops}; "
                    "remove it from requires_grad or move the stop"
                )
            if name in flow.unreachable:
                raise TrainingError(
                    f"parameter {name!r} does not reach the loss at all; remove it from requires_grad"
                )
        if not wanted:
            log.warning("requires_grad is empty: nothing trains (as in ONNX Runtime's generate_artifacts)")
        return ParameterPlan(tuple(wanted), tuple(frozen_given), derived=False)
    differentiable = differentiable_tensors(model, targets)
    constants = tuple(p for p in flow.trainable if p not in differentiable)
    trainable = [p for p in flow.trainable if p not in frozen_given and p not in constants]
    frozen = sorted(set(flow.frozen) | set(frozen_given) - set(trainable))
    if not trainable:
        log.warning("nothing trains: %s", _why_nothing_trains(params, flow.trainable, frozen_given, constants))
    return ParameterPlan(tuple(trainable), tuple(frozen), derived=True, constants=constants)


def _why_nothing_trains(
    params: set[str], reaching: Sequence[str], frozen_given: Sequence[str], constants: Sequence[str]
) -> str:
    """The real reason a derived ``requires_grad`` came out empty, for the warning."""
    if not params:
        return "the model has no float initializer (no weights)"
    if set(reaching) - set(constants):
        return "every parameter that reaches the loss is in frozen_params"
    if constants:
        return (
            f"the parameters that reach the loss ({', '.join(constants[:3])}) do so only through inputs "
            "ONNX Runtime does not differentiate (e.g. a Pow exponent)"
        )
    return "no parameter reaches the loss except through StopGradient nodes (move a stop to train some)"


def differentiable_tensors(model: onnx.ModelProto, targets: Sequence[str]) -> set[str]:
    """Tensors ORT would carry a gradient for: on a path to ``targets`` that enters every
    node at a differentiable input, carries float values, and crosses no StopGradient.

    One walk from the targets back through the nodes (ONNX orders them producers first).
    Names a subgraph reads count as differentiable inputs of its node; a tensor of unknown
    type counts as float.
    """
    types = _elem_types(model)
    live = {t for t in targets if types.get(t, FLOAT_TYPES_ANY) in _FLOAT}
    for node in reversed(model.graph.node):
        if is_stop_gradient(node) or not live.intersection(node.output):
            continue
        if node.op_type == "Cast" and _cast_target(node) not in _FLOAT:
            continue
        standard = node.domain in ("", "ai.onnx")
        skip = NON_DIFFERENTIABLE_INPUTS.get(node.op_type, frozenset()) if standard else frozenset()
        for index, name in enumerate(node.input):
            if name and index not in skip and types.get(name, FLOAT_TYPES_ANY) in _FLOAT:
                live.add(name)
        explicit = set(node.input)
        live.update(n for n in node_reads(node) if n not in explicit)
    return live


FLOAT_TYPES_ANY = -1  # stands for "type unknown": treated as float
_FLOAT = FLOAT_TYPES | {FLOAT_TYPES_ANY}


def _cast_target(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), FLOAT_TYPES_ANY)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference (or the model) knows."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - best effort: unknown types count as float
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update((t.name, t.data_type) for t in graph.initializer)
    return {name: elem for name, elem in types.items() if elem}


def _check_known(names: Sequence[str], params: set[str], option: str) -> None:
    unknown = [n for n in names if n not in params]
    if unknown:
        raise TensorNotFoundError(
            f"{option} names {', '.join(repr(n) for n in unknown[:3])}, not a float initializer "
            "of the model; `onnx-stopgrad list MODEL` shows the parameters"
        )
