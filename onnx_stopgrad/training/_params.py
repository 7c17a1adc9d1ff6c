"""Which parameters train: ``requires_grad`` / ``frozen_params`` checked against the graph."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from ..errors import TensorNotFoundError, TrainingError
from ..graph import (
    FLOAT_TYPES,
    NON_DIFFERENTIABLE_INPUTS,
    analyze_gradient_flow,
    element_types,
)

__all__ = ["NON_DIFFERENTIABLE_INPUTS", "ParameterPlan", "plan_parameters"]


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
    #: Rank-0 float initializers the derived lists leave constant (exporters write Python
    #: scalars so; see :mod:`onnx_stopgrad.graph`): trainable when listed.
    scalars: tuple[str, ...] = ()


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
    types = element_types(model)
    flow = analyze_gradient_flow(model, targets, types)
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
            if name in flow.constant:
                raise TrainingError(
                    f"parameter {name!r} reaches the loss only through inputs ONNX Runtime does not "
                    "differentiate (e.g. a Pow exponent); remove it from requires_grad"
                )
            if name in flow.unreachable:
                raise TrainingError(
                    f"parameter {name!r} does not reach the loss at all; remove it from requires_grad"
                )
        if not wanted:
            log.warning("requires_grad is empty: nothing trains (as in ONNX Runtime's generate_artifacts)")
        return ParameterPlan(tuple(wanted), tuple(frozen_given), derived=False)
    constants = flow.constant  # the one rule (onnx_stopgrad.graph) says ORT cannot train them
    trainable = [p for p in flow.trained_by_default if p not in frozen_given]
    frozen = sorted(set(flow.frozen) | set(frozen_given) - set(trainable))
    if not trainable:
        log.warning(
            "nothing trains: %s", _why_nothing_trains(params, flow.trainable, frozen_given, constants)
        )
    return ParameterPlan(
        tuple(trainable), tuple(frozen), derived=True, constants=constants, scalars=flow.scalars
    )


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


def _check_known(names: Sequence[str], params: set[str], option: str) -> None:
    unknown = [n for n in names if n not in params]
    if unknown:
        raise TensorNotFoundError(
            f"{option} names {', '.join(repr(n) for n in unknown[:3])}, not a float initializer "
            "of the model; `onnx-stopgrad list MODEL` shows the parameters"
        )
