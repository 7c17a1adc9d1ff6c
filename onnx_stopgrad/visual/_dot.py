"""Graphviz source for a model: stops highlighted, the no-gradient region shaded.

Boxes are ONNX nodes (or name scopes, see :mod:`._scopes`); float initializers are drawn
as notes coloured by how gradients reach them when nothing is collapsed, and counted in
their box's label otherwise. A legend says what every colour means and what was collapsed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from ..graph import FLOAT_TYPES, GradientFlow, is_stop_gradient, node_label
from ..passes import _constructs
from ._scopes import Grouping, group_nodes

__all__ = ["COLORS", "DotGraph", "build_dot"]

COLORS = {
    "stop": "#d62728",
    "nograd": "#c8c8c8",
    "grad": "#ffffff",
    "trainable": "#7bd389",
    "partial": "#ffbf69",
    "frozen": "#9db4d8",
    "unreachable": "#eeeeee",
    "io": "#fff3b0",
    "gradient_scale": "#8e44ad",
    "straight_through": "#0e8c8c",
}


@dataclass(frozen=True)
class DotGraph:
    source: str
    nodes: int
    boxes: int
    depth: int
    chains_merged: bool


def _q(text: str) -> str:
    """A double-quoted DOT string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _attrs(**kw: object) -> str:
    return "[" + ", ".join(f"{k}={_q(str(v))}" for k, v in kw.items() if v is not None) + "]"


def _param_kind(name: str, flow: GradientFlow) -> str:
    if name in flow.frozen:
        return "frozen"
    if name in flow.partially_blocked:
        return "partial"
    if name in flow.trainable:
        return "trainable"
    return "unreachable"


def build_dot(model: onnx.ModelProto, flow: GradientFlow, max_nodes: int) -> DotGraph:
    """DOT text for the main graph of ``model`` (subgraph bodies are drawn as their node)."""
    graph = model.graph
    nodes = list(graph.node)
    labels = [node_label(n, i) for i, n in enumerate(nodes)]
    blocked_set = set(flow.blocked_nodes)
    blocked = [label in blocked_set for label in labels]
    constructs = _constructs.members(model)  # each construct is drawn as one box of its own
    single = [is_stop_gradient(n) or i in constructs for i, n in enumerate(nodes)]
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    edges = [(producer[name], j) for j, n in enumerate(nodes) for name in n.input if name in producer]
    # Nodes without inputs (Constant) join the box of their first consumer when collapsing.
    attach: dict[int, int] = {}
    for a, b in edges:
        if not any(nodes[a].input) and a not in attach and not single[a]:
            attach[a] = b
    from ..modules import ModuleTree  # module scopes (dynamo metadata too) name the boxes

    grouping = group_nodes(ModuleTree(model).scoped_labels(), blocked, single, edges, max_nodes, attach)
    for i, construct in constructs.items():
        grouping.item[i] = f"c:{construct.name}"
    params = {t.name: _param_kind(t.name, flow) for t in graph.initializer if t.data_type in FLOAT_TYPES}
    lines = [
        "digraph onnx {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=0.35, newrank=true];',
        '  node [fontname="Helvetica", fontsize=10, style="filled", fillcolor="#ffffff", shape=box];',
        '  edge [color="#555555", arrowsize=0.6];',
    ]
    lines += _boxes(nodes, labels, blocked, grouping, params, {f"c:{c.name}": c for c in constructs.values()})
    lines += _io(graph, producer, grouping)
    drawn_edges = [
        (a, b) for a, b in edges if not (grouping.depth or grouping.chains_merged) or a not in attach
    ]
    drawn_edges = _one_edge_per_construct_input(drawn_edges, constructs)
    lines += _edges(nodes, producer, grouping, drawn_edges, {t.name for t in graph.initializer})
    if grouping.depth == 0 and not grouping.chains_merged:
        lines += _param_notes(nodes, grouping, params)
    lines += _legend(len(nodes), grouping, max_nodes, params)
    lines.append("}")
    return DotGraph(
        "\n".join(lines) + "\n", len(nodes), grouping.boxes, grouping.depth, grouping.chains_merged
    )


def _box_style(kind: str, blocked: bool) -> dict[str, object]:
    if kind == "stop":
        return {
            "shape": "octagon",
            "fillcolor": COLORS["stop"],
            "fontcolor": "white",
            "penwidth": 2.5,
            "color": "#7f0000",
        }
    return {
        "fillcolor": COLORS["nograd"] if blocked else COLORS["grad"],
        "color": "#888888" if blocked else "#333333",
    }


def _one_edge_per_construct_input(edges, constructs) -> list[tuple[int, int]]:
    """A construct reads its input twice (its stop and its Sub): draw that as one edge."""
    seen: set[tuple[int, str]] = set()
    kept = []
    for a, b in edges:
        if b in constructs:
            key = (a, constructs[b].name)
            if key in seen:
                continue
            seen.add(key)
        kept.append((a, b))
    return kept


def _construct_box(construct: _constructs.Construct) -> dict[str, object]:
    if construct.kind == _constructs.SCALE:
        text = f"gradient x {construct.factor:g}\nat {_short(construct.input, 40)}"
    else:
        text = f"straight-through\n{_short(construct.quantized, 24)}, grad to {_short(construct.input, 24)}"
    return {
        "label": text,
        "shape": "hexagon",
        "fillcolor": COLORS[construct.kind],
        "fontcolor": "white",
        "penwidth": 2,
    }


def _boxes(nodes, labels, blocked, grouping: Grouping, params, constructs) -> list[str]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(grouping.item):
        members[item].append(i)
    lines = []
    for item, idx in members.items():
        if item in constructs:
            lines.append(f"  {_q(item)} {_attrs(**_construct_box(constructs[item]))};")
            continue
        if len(idx) == 1 and item.startswith("n"):
            i = idx[0]
            node = nodes[i]
            kind = "stop" if is_stop_gradient(node) else "op"
            name = labels[i].rsplit("/", 1)[-1]
            text = (
                node.op_type
                if name in (node.op_type, "") or name.startswith(f"{node.op_type}#")
                else f"{node.op_type}\n{_short(name)}"
            )
            if kind == "stop":
                text = f"StopGradient\nat {_short(node.input[0] if node.input else labels[i], 40)}"
            lines.append(f"  {_q(item)} {_attrs(label=text, **_box_style(kind, blocked[i]))};")
            continue
        ops = Counter(nodes[i].op_type for i in idx if nodes[i].op_type != "Constant")
        top = ", ".join(f"{c} {op}" for op, c in ops.most_common(3)) + (", …" if len(ops) > 3 else "")
        read = Counter(params[name] for i in idx for name in nodes[i].input if name in params)
        param_text = ", ".join(f"{c} {k}" for k, c in sorted(read.items()))
        title = item.split(":")[1] if item.startswith("s:") else f"chain from {_short(labels[idx[0]], 24)}"
        nograd = blocked[idx[0]]
        count = f"{len(idx)} node{'s' if len(idx) > 1 else ''}"
        text = f"{_short(title, 40)}\n{count}{' · no gradient' if nograd else ''}\n{top}"
        if param_text:
            text += f"\nparams: {param_text}"
        style = _box_style("group", nograd)
        lines.append(f"  {_q(item)} {_attrs(label=text, shape='box3d', **style)};")
    return lines


def _io(graph: onnx.GraphProto, producer, grouping: Grouping) -> list[str]:
    lines = []
    inits = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name not in inits:
            attrs = _attrs(label=_short(value.name), shape="invhouse", fillcolor=COLORS["io"])
            lines.append(f"  {_q('in:' + value.name)} {attrs};")
    for value in graph.output:
        attrs = _attrs(label=_short(value.name), shape="house", fillcolor=COLORS["io"])
        lines.append(f"  {_q('out:' + value.name)} {attrs};")
        if value.name in producer:
            lines.append(f"  {_q(grouping.item[producer[value.name]])} -> {_q('out:' + value.name)};")
    return lines


def _edges(
    nodes, producer, grouping: Grouping, edges: Sequence[tuple[int, int]], inits: set[str]
) -> list[str]:
    counts: Counter[tuple[str, str]] = Counter()
    from_stop: set[tuple[str, str]] = set()
    for a, b in edges:
        key = (grouping.item[a], grouping.item[b])
        if key[0] != key[1]:
            counts[key] += 1
            if is_stop_gradient(nodes[a]):
                from_stop.add(key)
    lines = []
    for (source, sink), count in counts.items():
        dashed = (source, sink) in from_stop
        style = {"color": COLORS["stop"], "style": "dashed", "penwidth": 1.5} if dashed else {}
        lines.append(f"  {_q(source)} -> {_q(sink)} {_attrs(label=count if count > 1 else None, **style)};")
    seen: set[tuple[str, str]] = set()
    for j, node in enumerate(nodes):
        for name in node.input:
            if name and name not in producer and name not in inits:
                key = (f"in:{name}", grouping.item[j])
                if key not in seen:
                    seen.add(key)
                    lines.append(f"  {_q(key[0])} -> {_q(key[1])};")
    return lines


def _param_notes(nodes, grouping: Grouping, params) -> list[str]:
    lines = []
    for j, node in enumerate(nodes):
        for name in node.input:
            kind = params.get(name)
            if kind is None:
                continue
            pid = f"p:{name}:{j}"
            label = f"{_short(name, 28)}\n{kind}"
            lines.append(
                f"  {_q(pid)} {_attrs(label=label, shape='note', fontsize=8, fillcolor=COLORS[kind])};"
            )
            lines.append(f"  {_q(pid)} -> {_q(grouping.item[j])} {_attrs(color='#999999')};")
    return lines


def _legend(total: int, grouping: Grouping, limit: int, params) -> list[str]:
    kinds = Counter(params.values())
    if grouping.depth or grouping.chains_merged:
        if grouping.depth:
            how = f"by name scope (depth {grouping.depth})" + (
                "; straight chains merged" if grouping.chains_merged else ""
            )
        else:
            how = "by merging straight chains (no name scopes)"
        collapsed = f"{total} nodes collapsed into {grouping.boxes} boxes {how} (limit --max-nodes {limit})"
    else:
        collapsed = f"{total} nodes, none collapsed (limit --max-nodes {limit})"
    counts = ", ".join(f"{kinds.get(k, 0)} {k}" for k in ("trainable", "partial", "frozen", "unreachable"))
    entries = [
        ("lg_stop", "StopGradient", {"shape": "octagon", "fillcolor": COLORS["stop"], "fontcolor": "white"}),
        ("lg_nograd", "no gradient reaches it\n(behind a stop)", {"fillcolor": COLORS["nograd"]}),
        ("lg_grad", "receives a gradient", {"fillcolor": COLORS["grad"]}),
        (
            "lg_scale",
            "gradient scaled\n(onnx-stopgrad scale)",
            {"shape": "hexagon", "fillcolor": COLORS["gradient_scale"], "fontcolor": "white"},
        ),
        (
            "lg_ste",
            "straight-through\n(forward q, gradient of identity)",
            {"shape": "hexagon", "fillcolor": COLORS["straight_through"], "fontcolor": "white"},
        ),
        ("lg_trainable", "trainable parameter", {"shape": "note", "fillcolor": COLORS["trainable"]}),
        ("lg_partial", "parameter, some paths stopped", {"shape": "note", "fillcolor": COLORS["partial"]}),
        ("lg_frozen", "frozen parameter (only via stops)", {"shape": "note", "fillcolor": COLORS["frozen"]}),
        ("lg_group", "collapsed name scope", {"shape": "box3d"}),
    ]
    label = _q("legend: " + collapsed + chr(10) + "parameters: " + counts)
    lines = [
        "  subgraph cluster_legend {",
        f'    label={label}; fontsize=11; style=rounded; color="#999999";',
    ]
    for key, text, style in entries:
        lines.append(f"    {key} {_attrs(label=text, fontsize=9, **style)};")
    lines.append("    { rank=same; " + "; ".join(k for k, _, _ in entries) + "; }")
    lines.append("    " + " -> ".join(k for k, _, _ in entries) + " [style=invis];")
    lines.append("  }")
    return lines
