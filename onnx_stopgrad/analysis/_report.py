"""The result of ``analyze``: frozen dataclasses, a stable JSON form and a text form."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..passes.reports import ConstructInfo

__all__ = [
    "SCHEMA_VERSION",
    "AnalysisReport",
    "CostEstimate",
    "GradientGraphSize",
    "ModeInfo",
    "NodeRef",
    "ParameterInfo",
    "ParameterTotals",
    "StopInfo",
]

#: Bumped when a JSON key is removed or changes meaning (adding keys keeps it).
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ParameterInfo:
    """One float initializer."""

    name: str
    dtype: str
    shape: list[int]
    elements: int
    bytes: int
    #: StopGradient nodes on its paths to the loss (empty for unaffected parameters).
    blocked_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParameterTotals:
    count: int
    elements: int
    bytes: int

    @staticmethod
    def of(params: list[ParameterInfo]) -> ParameterTotals:
        return ParameterTotals(len(params), sum(p.elements for p in params), sum(p.bytes for p in params))


@dataclass(frozen=True)
class StopInfo:
    """One StopGradient node, in the model or added with ``--at``."""

    name: str
    input: str
    output: str
    #: "model" (already in the file) or "at" (inserted in memory for this analysis).
    origin: str
    #: Parameters that train no more because of the stops (this one among them).
    freezes: list[str]
    #: False when no parameter lies behind it or its output does not reach the loss.
    blocks_anything: bool
    #: The module (PyTorch path) whose output it stops, when the model has scope information.
    module: str = ""


@dataclass(frozen=True)
class NodeRef:
    name: str
    op_type: str
    #: The PyTorch module the node belongs to, where the export records scopes.
    module: str = ""


@dataclass(frozen=True)
class ModeInfo:
    """The mode a BatchNormalization/Dropout node trains in with ``artifacts``' defaults."""

    name: str
    op_type: str
    #: "train" or "eval": what the export says / what training does.
    exported: str
    mode: str
    #: "frozen" (behind the stops: always eval) or "trainable".
    region: str


@dataclass(frozen=True)
class GradientGraphSize:
    """Gradient-graph size with and without the stops."""

    #: "onnxruntime" (nodes of the training graph ORT built) or "static" (see ``unit``).
    source: str
    #: What is counted: "gradient nodes" (ORT) or "forward nodes with a gradient" (static).
    unit: str
    with_stops: int
    without_stops: int
    removed: int
    #: ORT's version when it built the graphs, else null.
    onnxruntime_version: str | None
    #: Why ORT was not used (not installed, or it refused the model), else null.
    fallback_reason: str | None
    #: Forward nodes whose gradient is computed, by the static rule (always present).
    static_with_stops: int
    static_without_stops: int


@dataclass(frozen=True)
class CostEstimate:
    """Backward work and memory, estimated from shapes (see ``assumptions``)."""

    backward_flops_with_stops: int
    backward_flops_without_stops: int
    backward_flops_saved: int
    activation_bytes_with_stops: int
    activation_bytes_without_stops: int
    activation_bytes_saved: int
    #: "onnxruntime" (tensors the ORT gradient graph reads) or "static" (rule of thumb).
    activation_source: str
    #: Symbolic dimension -> value used; ``dims_defaulted`` lists those nobody gave.
    dims: dict[str, int]
    dims_defaulted: list[str]
    #: Dimensions of intermediate tensors that inference left symbolic (counted as 1).
    unknown_intermediate_dims: int
    #: Tensors whose size could not be inferred: left out of the byte counts.
    tensors_of_unknown_size: int
    assumptions: list[str]


@dataclass(frozen=True)
class AnalysisReport:
    """Everything ``onnx-stopgrad analyze`` reports; ``to_json()`` is the stable form."""

    model: str
    loss_outputs: list[str]
    stops: list[StopInfo]
    frozen: list[ParameterInfo]
    partially_blocked: list[ParameterInfo]
    unaffected: list[ParameterInfo]
    #: Parameters with no path to the loss at all (a stop is not the reason).
    unreachable: list[ParameterInfo]
    totals: dict[str, ParameterTotals]
    #: Forward nodes whose gradient is computed without the stops but not with them.
    no_gradient_nodes: list[NodeRef]
    gradient_graph: GradientGraphSize
    costs: CostEstimate
    warnings: list[str]
    #: Parameters that reach the loss only through inputs ONNX Runtime does not
    #: differentiate (a Pow exponent, a Reshape shape): training keeps them constant.
    constant: list[ParameterInfo] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    #: BatchNormalization/Dropout nodes and the mode each trains in (``artifacts`` defaults).
    modes: list[ModeInfo] = field(default_factory=list)
    #: Gradient-scale and straight-through constructs (their StopGradient nodes are not in ``stops``).
    constructs: list[ConstructInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format_text(self, limit: int = 10) -> str:
        return "\n".join(_text_lines(self, limit))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _param_lines(title: str, params: list[ParameterInfo], total: ParameterTotals, limit: int) -> list[str]:
    lines = [f"{title}: {total.count} ({_count(total.elements)} elements, {_size(total.bytes)})"]
    for p in params[:limit]:
        via = f"  <- {', '.join(p.blocked_by)}" if p.blocked_by else ""
        lines.append(f"  {p.name}  {p.dtype}{p.shape}{via}")
    if len(params) > limit:
        lines.append(f"  ... and {len(params) - limit} more (--json lists all)")
    return lines


def _text_lines(r: AnalysisReport, limit: int) -> list[str]:
    lines = [f"model: {r.model}", f"loss from: {', '.join(r.loss_outputs)}"]
    lines.append(f"stops: {len(r.stops)}")
    for s in r.stops[:limit]:
        origin = " (--at, not written)" if s.origin == "at" else ""
        module = f" [output of module {s.module}]" if s.module else ""
        lines.append(f"  {s.name}: {s.input} -> {s.output}{module}{origin}")
    if len(r.stops) > limit:
        lines.append(f"  ... and {len(r.stops) - limit} more")
    if r.constructs:
        lines.append(f"gradient constructs: {len(r.constructs)}")
        lines.extend(f"  {c.describe()}" for c in r.constructs[:limit])
    lines.append("")
    for key, title in (
        ("frozen", "frozen (no gradient left)"),
        ("partially_blocked", "partially blocked (some paths stopped, still train)"),
        ("unaffected", "unaffected"),
    ):
        lines.extend(
            _param_lines(
                title, getattr(r, key), r.totals[key], limit if key != "unaffected" else min(limit, 5)
            )
        )
    if r.constant:
        title = "constant (reach the loss only through inputs ONNX Runtime does not differentiate)"
        lines.extend(_param_lines(title, r.constant, r.totals["constant"], 5))
    if r.unreachable:
        lines.extend(_param_lines("not reaching the loss at all", r.unreachable, r.totals["unreachable"], 5))
    lines.append("")
    g = r.gradient_graph
    src = (
        f"onnxruntime {g.onnxruntime_version} training graph" if g.source == "onnxruntime" else "static count"
    )
    lines.append(
        f"gradient graph ({src}, {g.unit}): {g.without_stops} without stops -> "
        f"{g.with_stops} with stops ({g.removed} removed)"
    )
    if g.fallback_reason:
        lines.append(f"  ({g.fallback_reason})")
    names = ", ".join(n.name for n in r.no_gradient_nodes[:limit])
    more = f", ... ({len(r.no_gradient_nodes) - limit} more)" if len(r.no_gradient_nodes) > limit else ""
    lines.append(
        f"forward nodes no longer differentiated: {len(r.no_gradient_nodes)}"
        + (f": {names}{more}" if names else "")
    )
    modules = _outermost(n.module for n in r.no_gradient_nodes if n.module)
    if modules:
        shown = ", ".join(modules[:limit])
        rest = f", ... ({len(modules) - limit} more)" if len(modules) > limit else ""
        lines.append(f"  in modules: {shown}{rest}")
    c = r.costs
    lines.append(
        f"backward FLOPs (estimate): {_count(c.backward_flops_without_stops)} -> "
        f"{_count(c.backward_flops_with_stops)} (saves {_count(c.backward_flops_saved)})"
    )
    lines.append(
        f"activations kept for backward ({c.activation_source}): "
        f"{_size(c.activation_bytes_without_stops)} -> {_size(c.activation_bytes_with_stops)} "
        f"(saves {_size(c.activation_bytes_saved)})"
    )
    dims = ", ".join(f"{k}={v}" for k, v in c.dims.items()) or "none symbolic"
    default_note = (
        f" ({', '.join(c.dims_defaulted)} not given: assumed 1; set with --dim NAME=VALUE)"
        if c.dims_defaulted
        else ""
    )
    lines.append(f"  dims: {dims}{default_note}")
    if c.unknown_intermediate_dims:
        lines.append(
            f"  {c.unknown_intermediate_dims} intermediate dimension(s) shape inference left unknown: "
            "counted as 1"
        )
    if c.tensors_of_unknown_size:
        lines.append(f"  {c.tensors_of_unknown_size} tensor(s) of unknown size left out")
    lines.append(
        "  assumptions: backward = forward FLOPs per input needing a gradient; see docs/analyze-show.md"
    )
    if r.modes:
        lines.append("training modes (artifacts defaults; behind the stops always eval):")
        groups: dict[tuple[str, str, str], list[str]] = {}
        for m in r.modes:
            groups.setdefault((m.op_type, m.mode, m.region), []).append(m.name)
        for (op_type, mode, region), nodes in groups.items():
            more = f", ... and {len(nodes) - limit} more" if len(nodes) > limit else ""
            lines.append(f"  {op_type} {mode}, {region} ({len(nodes)}): {', '.join(nodes[:limit])}{more}")
    for warning in r.warnings:
        lines.append(f"warning: {warning}")
    return lines


def _outermost(paths: Iterable[str]) -> list[str]:
    """The distinct module paths, without those inside another one listed."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(p.startswith(f"{q}.") for q in unique if q != p)]
