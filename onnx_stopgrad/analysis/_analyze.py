"""``analyze``: what the stops in a model (and those proposed with ``at``) cost and save."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping, Sequence

import onnx

from .._io import ModelLike, load_model
from ..errors import InvalidModelError, TensorNotFoundError
from ..graph import (
    FLOAT_TYPES,
    GradientFlow,
    TensorLinks,
    analyze_gradient_flow,
    element_types,
    is_stop_gradient,
    iter_node_sites,
    node_label,
    nodes_ort_cannot_differentiate,
    reach_back,
)
from ..modules import ModuleTree
from ..passes import _constructs, insert_stop_gradient, validate_model
from ._backward import BackwardPlan, plan_backward
from ._costs import COST_ASSUMPTIONS, forward_flops, kept_for_backward
from ._ort_graph import (
    OrtGradientGraph,
    UndifferentiableGraphError,
    build_ort_gradient_graph,
    ort_error_message,
    ort_training_version,
)
from ._report import (
    AnalysisReport,
    CostEstimate,
    GradientGraphSize,
    ModeInfo,
    NodeRef,
    ParameterInfo,
    ParameterTotals,
    StopInfo,
)
from ._shapes import ShapeTable, infer_shapes

__all__ = ["analyze"]

log = logging.getLogger(__name__)


def analyze(
    model: ModelLike,
    at: Sequence[str] = (),
    loss_outputs: Sequence[str] | None = None,
    dims: Mapping[str, int] | None = None,
    use_onnxruntime: bool = True,
    modules: Sequence[str] = (),
) -> AnalysisReport:
    """Report what the model's StopGradient nodes, plus stops at ``at``, block and save.

    ``loss_outputs``: tensors the loss is computed from (default: every graph output).
    ``dims``: values for symbolic dimensions (others count as 1). ``modules``: PyTorch
    module paths whose outputs are stopped too (see ``insert_stop_gradient``). Nothing is written.
    """
    proto, _ = load_model(model)
    validate_model(proto)
    label = "<ModelProto>" if isinstance(model, onnx.ModelProto) else str(model)
    existing = {
        (site.path, site.label) for site in iter_node_sites(proto.graph) if is_stop_gradient(site.node)
    }
    if at or modules:
        proto, _report = insert_stop_gradient(proto, list(at), module=list(modules))
    graph = proto.graph
    targets = _check_targets(graph, loss_outputs)
    table = infer_shapes(proto, dims)
    float_targets = [t for t in targets if _is_float(t, table)]
    if not float_targets:
        raise InvalidModelError(
            f"no floating-point loss output among {', '.join(targets)}; name one with --loss-output"
        )
    types = element_types(proto)
    flow = analyze_gradient_flow(_constructs.gradient_view(proto), float_targets, types)
    params = {t.name: t for t in graph.initializer if t.data_type in FLOAT_TYPES}

    def infos(names: Iterable[str]) -> list[ParameterInfo]:
        return [_param_info(params[n], flow.blocking_stops.get(n, ())) for n in names]

    scalars = set(flow.scalars)
    partial = set(flow.partially_blocked) - scalars
    groups = {
        "frozen": infos(flow.frozen),
        "partially_blocked": infos(p for p in flow.partially_blocked if p not in scalars),
        "unaffected": infos(p for p in flow.trained_by_default if p not in partial),
        "unreachable": infos(flow.unreachable),
        "constant": infos([*flow.constant, *flow.scalars]),
    }
    constructs = list(_constructs.describe(proto))
    in_constructs = {name for construct in constructs for name in construct.nodes}
    tree = ModuleTree(proto)
    stops = [stop for stop in _stops(proto, flow, existing, types, tree) if stop.name not in in_constructs]
    without = plan_backward(
        graph, [*flow.trained_by_default, *flow.frozen], float_targets, types, cut_stops=False
    )
    with_ = plan_backward(graph, flow.trained_by_default, float_targets, types, cut_stops=True)
    kept_static = set(with_.nodes)
    node_modules = tree.node_modules()
    no_gradient = [
        NodeRef(node_label(graph.node[i], i), graph.node[i].op_type, node_modules[i])
        for i in without.nodes
        if i not in kept_static and not is_stop_gradient(graph.node[i])
    ]
    ort_with, ort_without, version, reason, blocked = _ort_graphs(
        proto, flow, float_targets, table, use_onnxruntime
    )
    gradient_graph = _graph_size(without, with_, ort_with, ort_without, version, reason)
    costs = _costs(graph, table, params, without, with_, ort_with, ort_without)
    static_blocked = nodes_ort_cannot_differentiate(graph, flow.trained_by_default, float_targets, types)
    warnings = _warnings(stops, flow, static_blocked, blocked if version is not None else None)
    for warning in warnings:
        log.warning(warning)
    return AnalysisReport(
        model=label,
        loss_outputs=float_targets,
        stops=stops,
        frozen=groups["frozen"],
        partially_blocked=groups["partially_blocked"],
        unaffected=groups["unaffected"],
        unreachable=groups["unreachable"],
        totals={key: ParameterTotals.of(value) for key, value in groups.items()},
        no_gradient_nodes=no_gradient,
        gradient_graph=gradient_graph,
        costs=costs,
        warnings=warnings,
        modes=_modes(proto, flow.trained_by_default, float_targets),
        constructs=constructs,
        constant=groups["constant"],
    )


def _modes(proto: onnx.ModelProto, trainable: Sequence[str], targets: Sequence[str]) -> list[ModeInfo]:
    """Which BatchNormalization/Dropout nodes ``artifacts`` runs in which mode by default."""
    from ..training import plan_modes

    return [
        ModeInfo(m.node, m.op_type, m.exported, m.mode, m.region)
        for m in plan_modes(proto, trainable, targets)
    ]


def _is_float(name: str, table: ShapeTable) -> bool:
    info = table.get(name)
    return info is None or info.elem_type in FLOAT_TYPES


def _check_targets(graph: onnx.GraphProto, loss_outputs: Sequence[str] | None) -> list[str]:
    if not loss_outputs:
        targets = [o.name for o in graph.output]
        if not targets:
            raise InvalidModelError("the graph has no outputs; name the loss tensor with --loss-output")
        return targets
    known = {name for n in graph.node for name in n.output if name}
    known.update(i.name for i in graph.input)
    for name in loss_outputs:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else "; run `onnx-stopgrad show` to see the graph"
            )
            raise TensorNotFoundError(f"loss output {name!r} is not a tensor of the graph{hint}")
    return list(dict.fromkeys(loss_outputs))


def _param_info(tensor: onnx.TensorProto, blocked_by: Iterable[str]) -> ParameterInfo:
    shape = [int(d) for d in tensor.dims]
    elements = 1
    for d in shape:
        elements *= d
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return ParameterInfo(
        name=tensor.name,
        dtype=onnx.TensorProto.DataType.Name(tensor.data_type).lower(),
        shape=shape,
        elements=elements,
        bytes=elements * itemsize,
        blocked_by=list(blocked_by),
    )


def _stops(
    proto: onnx.ModelProto,
    flow: GradientFlow,
    existing: set[tuple[str, str]],
    types: dict[str, int],
    tree: ModuleTree,
) -> list[StopInfo]:
    """Every StopGradient of every graph, with the parameters it freezes and whether it
    blocks anything (a parameter behind it, its output reaching the loss)."""
    links = TensorLinks(proto.graph, types)
    params = {t.name for t in proto.graph.initializer if t.data_type in FLOAT_TYPES}
    frozen = set(flow.frozen)
    result = []
    for stop in links.stops:
        behind = reach_back([stop.input], links.all_preds) & params
        freezes = sorted(p for p in frozen if stop.label in flow.blocking_stops.get(p, ()))
        result.append(
            StopInfo(
                name=stop.label,
                input=stop.input,
                output=stop.output,
                origin="model" if (stop.path, stop.label) in existing else "at",
                freezes=freezes,
                blocks_anything=bool(behind) and stop.output in flow.reaches_targets,
                module=tree.module_ending(stop.input) if tree.has_scopes else "",
            )
        )
    return result


def _ort_graphs(proto, flow, targets, table, use_onnxruntime):
    """``(with stops, without, version, reason, blocked)``: ORT's gradient graphs, or the
    reason they are missing; ``blocked`` lists the nodes ORT cannot differentiate with the
    stops (judged on its optimized graph)."""
    if not use_onnxruntime:
        return None, None, None, "onnxruntime not used (--static)", ()
    version, reason = ort_training_version()
    if version is None:
        return None, None, None, reason, ()
    blocked: tuple[str, ...] = ()
    try:
        try:
            with_ = build_ort_gradient_graph(proto, flow.trained_by_default, targets, table, cut_stops=True)
        except UndifferentiableGraphError as exc:
            blocked = exc.nodes
            raise
        without = build_ort_gradient_graph(
            proto, [*flow.trained_by_default, *flow.frozen], targets, table, cut_stops=False
        )
    except UndifferentiableGraphError as exc:
        return None, None, version, f"{exc}; counts are static", blocked
    except Exception as exc:  # ORT raises plain RuntimeError/Fail for models it refuses
        log.info("onnxruntime could not build the gradient graph: %s", exc)
        return (
            None,
            None,
            version,
            (
                f"onnxruntime {version} could not build the training graph ({ort_error_message(exc)}); "
                "counts are static"
            ),
            (),
        )
    return with_, without, version, None, ()


def _graph_size(
    without: BackwardPlan,
    with_: BackwardPlan,
    ort_with: OrtGradientGraph | None,
    ort_without: OrtGradientGraph | None,
    version: str | None,
    reason: str | None,
) -> GradientGraphSize:
    static = (len(with_.nodes), len(without.nodes))
    if ort_with is not None and ort_without is not None:
        counts, source, unit = (
            (ort_with.gradient_nodes, ort_without.gradient_nodes),
            "onnxruntime",
            "gradient nodes",
        )
    else:
        counts, source, unit = static, "static", "forward nodes with a gradient"
    return GradientGraphSize(
        source=source,
        unit=unit,
        with_stops=counts[0],
        without_stops=counts[1],
        removed=counts[1] - counts[0],
        onnxruntime_version=version if source == "onnxruntime" else None,
        fallback_reason=reason,
        static_with_stops=static[0],
        static_without_stops=static[1],
    )


def _costs(graph, table, params, without, with_, ort_with, ort_without) -> CostEstimate:
    def flops(plan: BackwardPlan) -> int:
        return sum(forward_flops(graph.node[i], table) * len(plan.grad_inputs[i]) for i in plan.nodes)

    def static_kept(plan: BackwardPlan) -> set[str]:
        kept: set[str] = set()
        for i in plan.nodes:
            kept.update(n for n in kept_for_backward(graph.node[i], params) if _is_float(n, table))
        return kept

    if ort_with is not None and ort_without is not None:
        kept_with, kept_without, source = (
            set(ort_with.kept_activations),
            set(ort_without.kept_activations),
            "onnxruntime",
        )
    else:
        kept_with, kept_without, source = static_kept(with_), static_kept(without), "static"
    unknown = {n for n in kept_with | kept_without if table.nbytes(n) is None}

    def size(names: set[str]) -> int:
        return sum(table.nbytes(n) or 0 for n in names)

    f_with, f_without = flops(with_), flops(without)
    b_with, b_without = size(kept_with), size(kept_without)
    return CostEstimate(
        backward_flops_with_stops=f_with,
        backward_flops_without_stops=f_without,
        backward_flops_saved=f_without - f_with,
        activation_bytes_with_stops=b_with,
        activation_bytes_without_stops=b_without,
        activation_bytes_saved=b_without - b_with,
        activation_source=source,
        dims=dict(table.dims_used),
        dims_defaulted=list(table.dims_defaulted),
        unknown_intermediate_dims=table.unknown_intermediate_dims,
        tensors_of_unknown_size=len(unknown),
        assumptions=[
            *COST_ASSUMPTIONS,
            "symbolic dimensions not given with --dim count as 1",
            "without the stops, every parameter that reaches the loss trains; with them, the "
            "parameters that keep a gradient path",
        ],
    )


def _warnings(
    stops: list[StopInfo], flow: GradientFlow, static_blocked: Sequence[str], blocked: Sequence[str] | None
) -> list[str]:
    """One line per useless stop, per node ORT cannot differentiate (``blocked``, from its
    optimized graph; None: ``static_blocked``, judged on the model as given), and when
    nothing trains."""
    warnings = []
    for stop in stops:
        if not stop.blocks_anything:
            warnings.append(
                f"StopGradient {stop.name} at {stop.input!r} blocks nothing: no parameter lies "
                "behind it, or its output does not reach the loss"
            )
    static = blocked is None
    nodes = static_blocked if blocked is None else blocked
    for node in nodes[:1]:
        unless = " unless its optimizer removes it (a constant If condition)" if static else ""
        warnings.append(
            f"ONNX Runtime 1.19 cannot differentiate node {node}{unless}: `artifacts` then refuses this "
            "model; put StopGradient nodes around it (at its output, and at its inputs that parameters "
            "reach) or freeze those parameters"
        )
    if flow.frozen and not flow.trained_by_default:
        how = "stops or inputs ONNX Runtime does not differentiate" if flow.constant else "stops"
        warnings.append(
            f"no trainable parameter remains: every parameter reaches the loss only through {how}"
        )
    return warnings
