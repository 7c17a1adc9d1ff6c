"""The BatchNormalization/Dropout step of ``generate_artifacts``: plan, protect, rewrite."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx

from ..errors import TrainingError
from ._mode_rewrite import ModeRewrite, apply_modes
from ._modes import NodeMode, plan_modes, running_statistics
from ._params import ParameterPlan

__all__ = ["mode_adjustments", "prepare_modes", "refuse_training_statistics"]

log = logging.getLogger(__name__)


def prepare_modes(
    model: onnx.ModelProto, plan: ParameterPlan, targets: Sequence[str], batchnorm: str, dropout: str
) -> tuple[list[NodeMode], ParameterPlan, ModeRewrite]:
    """Decide every node's mode, rewrite ``model`` in place, and make the running
    statistics frozen parameters (never trained; in the checkpoint, so they can update)."""
    stats = running_statistics(model)
    modes = plan_modes(model, plan.trainable, targets, batchnorm, dropout)
    rewrite = apply_modes(model, modes)
    if stats:
        plan = ParameterPlan(
            tuple(p for p in plan.trainable if p not in stats),
            tuple(dict.fromkeys([*plan.frozen, *stats])),
            plan.derived,
            tuple(p for p in plan.constants if p not in stats),
            plan.scalars,
        )
    return modes, plan, rewrite


def refuse_training_statistics(model: onnx.ModelProto, requires_grad: Sequence[str] | None) -> None:
    """A BatchNormalization running statistic listed in ``requires_grad`` is one error line."""
    listed = set(requires_grad or ())
    trained = [name for name in running_statistics(model) if name in listed]
    if trained:
        raise TrainingError(
            f"{trained[0]!r} is a BatchNormalization running statistic: it is never trained; "
            "remove it from requires_grad"
        )


def mode_adjustments(rewrite: ModeRewrite) -> list[str]:
    """Report lines about running statistics (the modes themselves are ``report.modes``)."""
    lines = []
    if rewrite.updates:
        lines.append(
            f"{len(rewrite.updates)} running statistic(s) update after each step: the training model "
            "returns them after the loss; fit/`train` copy them into the checkpoint (a loop of your "
            "own: RunningStatistics.update)"
        )
    if rewrite.fixed_statistics:
        line = (
            f"{len(rewrite.fixed_statistics)} running statistic(s) of training-mode BatchNorm nodes are "
            f"computed in the graph, not stored ({rewrite.fixed_statistics[0]}, ...): they cannot update"
        )
        log.warning("%s", line)
        lines.append(line)
    return lines
