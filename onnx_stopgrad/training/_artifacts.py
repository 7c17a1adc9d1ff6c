"""``generate_artifacts``: ORT's function, taught that StopGradient blocks gradients."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .._io import ModelLike, input_files, load_model, refuse_overwriting
from .._ort119 import cap_ir_version
from .._reports import ReportFields
from ..errors import TrainingError
from ..graph import hollow_copy, is_stop_gradient, node_label
from ..passes import validate_model
from ..passes.remove import remove_in_place
from . import _ort
from ._activations import restore_hard_activations
from ._count import GRADIENT_NODE_MARK, count_gradient_nodes
from ._export import OUTPUTS_METADATA_KEY
from ._fixups import apply_fixups
from ._losses import prepare_loss
from ._mode_plan import mode_adjustments, prepare_modes, refuse_training_statistics
from ._mode_rewrite import ModeRewrite
from ._modes import NodeMode
from ._params import ParameterPlan, plan_parameters
from ._publish import discard, make_staging_dir, publish
from ._surgery import _keep as _keep_props
from ._surgery import detach_stops, keep_alive_names, restore_stops
from ._ties import warn_split_ties
from ._weight_free import UndifferentiableGraphError, gradient_nodes_weight_free, training_input

__all__ = ["GRADIENT_NODE_MARK", "ArtifactsReport", "count_gradient_nodes", "generate_artifacts"]

log = logging.getLogger(__name__)

_MAX_CONSTANT_RETRIES = 16


@dataclass(frozen=True)
class ArtifactsReport(ReportFields):
    """What :func:`generate_artifacts` wrote and decided."""

    directory: Path
    files: tuple[str, ...]
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    #: StopGradient nodes that were honoured (names, or ``op#index``).
    stops: tuple[str, ...]
    #: One line per change made so ORT 1.19 accepts the model.
    adjustments: tuple[str, ...]
    #: Gradient nodes in the training model (:func:`count_gradient_nodes`).
    gradient_nodes: int
    #: The same count for the model with every stop removed (as ``remove_stop_gradient``
    #: does) and the parameters that then reach the loss trainable (None when not measured).
    gradient_nodes_without_stops: int | None
    #: One line per StopGradient inserted from ``stop_at`` before the build.
    inserted: tuple[str, ...] = ()
    #: The mode each BatchNormalization/Dropout node trains in (:class:`NodeMode`).
    modes: tuple[NodeMode, ...] = ()

    @property
    def gradient_nodes_removed(self) -> int | None:
        """Gradient nodes the stops saved, compared with the same model without them."""
        if self.gradient_nodes_without_stops is None:
            return None
        return self.gradient_nodes_without_stops - self.gradient_nodes

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``gradient_nodes_removed``, ready for JSON."""
        return {**super().to_dict(), "gradient_nodes_removed": self.gradient_nodes_removed}


def generate_artifacts(
    model: ModelLike,
    requires_grad: Sequence[str] | None = None,
    frozen_params: Sequence[str] | None = None,
    loss: Any = None,
    optimizer: Any = None,
    artifact_directory: str | os.PathLike[str] | None = None,
    prefix: str = "",
    ort_format: bool = False,
    custom_op_library: str | os.PathLike[str] | None = None,
    additional_output_names: Sequence[str] | None = None,
    nominal_checkpoint: bool = False,
    loss_input_names: Sequence[str] | None = None,
    *,
    stop_at: Sequence[str] = (),
    stop_modules: Sequence[str] = (),
    measure_removed: bool = True,
    batchnorm: str = "as-exported",
    dropout: str = "as-exported",
    portable: bool = False,
) -> ArtifactsReport:
    """Like ``onnxruntime.training.artifacts.generate_artifacts``, honouring StopGradient.

    With ``requires_grad=None`` the float initializers that reach the loss on a path
    without a StopGradient train; the ones behind stops are frozen. The directory is
    created; its files appear only once all of them are built. ``measure_removed``
    builds the gradient graph a second time, without the stops, to count what they saved.
    ``loss`` and ``optimizer`` take ORT's enums, onnxblock blocks, or names such as
    ``"mse"`` / ``"adamw"``; ``"crossentropy"`` reads logits with the class axis last,
    ``(N, C)`` or ``(B, T, C)``, and skips labels equal to -100, as PyTorch does. A model
    output the loss cannot read is refused before anything is built. ``stop_at`` names
    tensors to insert a StopGradient at first (into the private copy; the input model is
    never changed); ``stop_modules`` names PyTorch module paths whose outputs are stopped
    the same way (see ``insert_stop_gradient``).

    BatchNormalization and Dropout nodes behind the stops run in inference mode (running
    statistics, identity). In the trainable region they run as exported, or as
    ``batchnorm`` (``"as-exported"``, ``"train"``, ``"eval"``) and ``dropout``
    (``"as-exported"``, ``"on"``, ``"off"``) say; running statistics are never trained
    (see :mod:`onnx_stopgrad.training._mode_rewrite`). ``portable`` writes the
    training and eval models with each stop as a plain Identity: same losses and gradients,
    and any ONNX Runtime training runtime loads them without the op library.
    """
    artifacts = _ort.ort_artifacts()
    from ._choices import loss_type, optimizer_type

    loss_type(loss)  # an unknown loss name fails before the model is read
    optimizer = optimizer_type(optimizer)
    proto, sources = _load_complete(model)
    inserted: tuple[str, ...] = ()
    if stop_at or stop_modules:
        from ..passes import insert_in_place

        insert_report = insert_in_place(proto, list(stop_at), module=list(stop_modules))
        inserted = tuple(line for line in insert_report.summary().splitlines() if line)
    adjustments = apply_fixups(proto)
    loss = prepare_loss(loss, proto, loss_input_names)
    graph_outputs = [o.name for o in proto.graph.output]
    targets = list(loss_input_names or graph_outputs)
    refuse_training_statistics(proto, requires_grad)
    plan = plan_parameters(proto, requires_grad, frozen_params, targets)
    modes, plan, rewrite = prepare_modes(proto, plan, targets, batchnorm, dropout)
    adjustments.extend(mode_adjustments(rewrite))
    warn_split_ties(proto, plan.trainable)
    stops = tuple(node_label(n, i) for i, n in enumerate(proto.graph.node) if is_stop_gradient(n))
    if custom_op_library is None and stops and not portable:
        custom_op_library = _stop_library()
    target = Path(artifact_directory) if artifact_directory is not None else Path.cwd()
    written = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")
    refuse_overwriting([target / f"{prefix}{name}" for name in written], sources)
    # The weight-free copy the removed count is measured on: taken before _build detaches
    # the stops of ``proto`` in place.
    hollow = hollow_copy(proto) if stops and measure_removed else None
    staging = make_staging_dir(target)
    try:
        plan = _build(
            artifacts, proto, plan, staging,
            loss=loss, optimizer=optimizer, prefix=prefix, ort_format=ort_format,
            custom_op_library=custom_op_library, nominal_checkpoint=nominal_checkpoint,
            additional_output_names=list(additional_output_names or ()),
            loss_input_names=loss_input_names, rewrite=rewrite, portable=portable,
        )  # fmt: skip
        adjustments.extend(
            f"{name}: ONNX Runtime cannot differentiate it here; kept as a constant"
            for name in plan.constants
        )
        adjustments.extend(
            f"{name}: a scalar (exporters write Python constants so); kept as a constant, "
            "list it in requires_grad to train it"
            for name in plan.scalars
        )
        gradient_nodes = count_gradient_nodes(onnx.load(str(staging / f"{prefix}training_model.onnx")))
        without = None
        if not stops:
            without = gradient_nodes
        elif hollow is not None:
            without = _gradient_nodes_without_stops(
                hollow, proto, plan, requires_grad, frozen_params, targets, loss, loss_input_names
            )
        checkpoints = (f"{prefix}checkpoint", f"{prefix}nominal_checkpoint")
        files = publish(staging, target, checkpoints)
    except BaseException:
        discard(staging)
        raise
    return ArtifactsReport(
        directory=target,
        files=tuple(sorted(f.name for f in files)),
        trainable=plan.trainable,
        frozen=plan.frozen,
        stops=stops,
        adjustments=tuple(adjustments),
        gradient_nodes=gradient_nodes,
        gradient_nodes_without_stops=without,
        inserted=inserted,
        modes=tuple(modes),
    )


def _stop_library() -> str | None:
    """The op library, registered while ORT builds (the stops are out of the graph then,
    so a missing library only matters later, when the artifacts run)."""
    from .._library import get_library_path
    from ..errors import LibraryError

    try:
        return get_library_path()
    except LibraryError as exc:
        log.warning("%s; the artifacts are built, but need it to run", exc)
        return None


def _load_complete(model: ModelLike) -> tuple[onnx.ModelProto, set[Path]]:
    """A private copy of the model with its external weights loaded (never modifies the
    input), and the files it was read from (none for a ModelProto)."""
    proto, directory = load_model(model)
    validate_model(proto)  # broken graphs and corrupt names: one line, before any weight is read
    sources = set() if directory is None else input_files(Path(model), proto, directory)  # type: ignore[arg-type]
    if directory is None:
        proto = copy.deepcopy(proto)  # the caller's proto; one loaded from a file is already private
    else:
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(directory))
        except OSError as exc:
            raise TrainingError(f"cannot read the model's external weights ({exc})") from exc
    return proto, sources


def _build(
    artifacts: Any,
    proto: onnx.ModelProto,
    plan: ParameterPlan,
    staging: Path,
    *,
    additional_output_names: list[str],
    prefix: str,
    ort_format: bool,
    custom_op_library: Any,
    rewrite: ModeRewrite,
    portable: bool,
    **ort_options: Any,
) -> ParameterPlan:
    """Run ORT's generate_artifacts on the stop-free graph, then restore the stops.

    ``proto`` is private: its stops are detached in place (ORT copies the model it gets).

    Derived parameter lists can still name a constant ORT cannot differentiate (when it
    reports one as unreachable, which :mod:`._params` did not foresee); it is dropped and
    the build retried. Returns the final plan.
    """
    detached, stops = detach_stops(proto, in_place=True)
    targets = list(ort_options.get("loss_input_names") or [o.name for o in proto.graph.output])
    # Judged weight-free, with the parameters as graph inputs, as ORT's own build does.
    weight_free = training_input(hollow_copy(detached), detached, [*plan.trainable, *plan.frozen])
    _ort.refuse_undifferentiable(weight_free, plan.trainable, targets, custom_op_library)
    outputs = {o.name for o in proto.graph.output} | set(additional_output_names)
    temporary = [n for n in keep_alive_names(stops) if n not in outputs]
    extra_outputs = additional_output_names + temporary + list(rewrite.updates)
    for _ in range(_MAX_CONSTANT_RETRIES):
        try:
            with _ort.quiet_ort():
                artifacts.generate_artifacts(
                    detached,
                    requires_grad=list(plan.trainable),
                    frozen_params=list(plan.frozen),
                    artifact_directory=staging,
                    prefix=prefix,
                    custom_op_library=custom_op_library,
                    additional_output_names=extra_outputs or None,
                    **{key: copy.deepcopy(value) for key, value in ort_options.items()},
                )
            break
        except Exception as exc:  # ORT raises RuntimeError, Fail, LookupError, ...
            name = _ort.unreachable_param(exc)
            if not plan.derived or name not in plan.trainable:
                raise _ort.ort_error(exc, "build the gradient graph") from exc
            log.info("ORT cannot differentiate %s: treating it as a constant", name)
            plan = ParameterPlan(
                tuple(p for p in plan.trainable if p != name),
                plan.frozen,
                True,
                (*plan.constants, name),
                plan.scalars,
            )
            if not plan.trainable:
                log.warning(
                    "nothing trains: ONNX Runtime cannot differentiate the parameters that reach the loss"
                )
    model_outputs = json.dumps([o.name for o in proto.graph.output] + additional_output_names)
    for kind in ("training", "eval"):
        path = staging / f"{prefix}{kind}_model.onnx"
        built = onnx.load(str(path))
        restore_stops(built, stops, temporary, portable=portable)
        if kind == "training":
            rewrite.finish_training(built)
        else:
            rewrite.finish_eval(built)
            restore_hard_activations(built)
        cap_ir_version(built)
        if kind == "eval":  # what export_for_inference keeps
            _keep_props(built.metadata_props, lambda p: p.key != OUTPUTS_METADATA_KEY)
            built.metadata_props.add(key=OUTPUTS_METADATA_KEY, value=model_outputs)
        onnx.save(built, str(path))
    optimizer_path = staging / f"{prefix}optimizer_model.onnx"
    if optimizer_path.exists():
        optimizer_model = onnx.load(str(optimizer_path))
        if cap_ir_version(optimizer_model) is not None:
            onnx.save(optimizer_model, str(optimizer_path))
    if ort_format:
        _convert_to_ort_format(staging, prefix, custom_op_library, bool(stops) and not portable)
    return plan


def _convert_to_ort_format(staging: Path, prefix: str, library: Any, has_stops: bool) -> None:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    if library is None and has_stops:
        from .._library import get_library_path

        library = get_library_path()  # converting a model with stops needs it: raise if missing
    for path in sorted(staging.glob(f"{prefix}*_model.onnx")):
        try:  # the converter prints progress: keep it off the caller's stdout
            with contextlib.redirect_stdout(io.StringIO()) as printed, _ort.quiet_ort():
                convert_onnx_models_to_ort(
                    path,
                    output_dir=staging,
                    custom_op_library_path=Path(library) if library else None,
                    optimization_styles=[OptimizationStyle.Fixed],
                )
            log.debug("%s", printed.getvalue())
        except Exception as exc:
            raise _ort.ort_error(exc, f"convert {path.name} to ORT format") from exc


def _gradient_nodes_without_stops(
    hollow: onnx.ModelProto,
    proto: onnx.ModelProto,
    plan: ParameterPlan,
    requires_grad: Sequence[str] | None,
    frozen_params: Sequence[str] | None,
    targets: list[str],
    loss: Any,
    loss_input_names: Sequence[str] | None,
) -> int | None:
    """Gradient nodes ORT builds for the model with its stops removed (same user choices),
    counted on ``hollow``, its weight-free copy (:mod:`._weight_free`; ``proto`` supplies
    the data of constants): no weight is copied or written.

    Removed, not made Identity: an Identity would get a gradient node of its own, which
    the model without stops does not have.
    """
    plain = hollow
    remove_in_place(plain)
    if requires_grad is None:
        try:
            plain_plan = plan_parameters(plain, None, frozen_params, targets)
        except TrainingError:
            return None
        trainable = [p for p in plain_plan.trainable if p in plan.trainable or p in plan.frozen]
    else:
        trainable = list(plan.trainable)
    frozen = [p for p in plan.frozen if p not in trainable]
    try:
        with _ort.quiet_ort():
            return gradient_nodes_weight_free(plain, proto, trainable, frozen, loss, loss_input_names)
    except UndifferentiableGraphError as exc:  # refused before ORT would fail, or abort the process
        log.warning("could not measure the gradient nodes without stops: %s", exc)
        return None
    except Exception as exc:  # measuring is best effort; the artifacts are already built
        reason = str(_ort.ort_error(exc, "differentiate the model without its stops")).split("; ")[0]
        log.warning("could not measure the gradient nodes without stops: %s", reason)
        return None
