"""Which parameters train: ``requires_grad`` / ``frozen_params`` checked against the graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from .._flow import FLOAT_TYPES, analyze_gradient_flow
from ..errors import TensorNotFoundError, TrainingError

__all__ = ["ParameterPlan", "plan_parameters", "NON_DIFFERENTIABLE_INPUTS"]

#: Float inputs ORT 1.19 never differentiates (op_type -> input indices): left as constants.
NON_DIFFERENTIABLE_INPUTS: dict[str, frozenset[int]] = {
    "Dropout": frozenset({1, 2}),
}


@dataclass(frozen=True)
class ParameterPlan:
    """The lists handed to ORT, plus what the defaults were derived from."""

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    #: True when ``requires_grad`` was derived from the graph (not given by the user).
    derived: bool


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
        if not wanted:
            raise TrainingError("requires_grad is empty: nothing to train; pass None to derive it")
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
        return ParameterPlan(tuple(wanted), tuple(frozen_given), derived=False)
    constants = non_differentiable_params(model)
    trainable = [p for p in flow.trainable if p not in frozen_given and p not in constants]
    if not trainable and flow.trainable:
        raise TrainingError("every parameter that reaches the loss is in frozen_params: nothing to train")
    if not trainable:
        raise TrainingError(
            "no parameter reaches the loss except through StopGradient nodes: nothing to train "
            "(move a stop, or list parameters in requires_grad)"
        )
    frozen = sorted(set(flow.frozen) | set(frozen_given) - set(trainable))
    return ParameterPlan(tuple(trainable), tuple(frozen), derived=True)


def non_differentiable_params(model: onnx.ModelProto) -> set[str]:
    """Initializers read only at inputs ORT never differentiates (e.g. a Dropout ratio)."""
    only_constant: dict[str, bool] = {}
    for node in model.graph.node:
        skip = NON_DIFFERENTIABLE_INPUTS.get(node.op_type, frozenset()) if not node.domain else frozenset()
        for index, name in enumerate(node.input):
            if name:
                constant = index in skip
                only_constant[name] = only_constant.get(name, True) and constant
    initializers = {t.name for t in model.graph.initializer}
    return {name for name, constant in only_constant.items() if constant and name in initializers}


def _check_known(names: Sequence[str], params: set[str], option: str) -> None:
    unknown = [n for n in names if n not in params]
    if unknown:
        raise TensorNotFoundError(
            f"{option} names {', '.join(repr(n) for n in unknown[:3])}, not a float initializer "
            "of the model; `onnx-stopgrad list MODEL` shows the parameters"
        )
