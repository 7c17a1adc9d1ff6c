"""Collapse nodes into boxes by name scope so big graphs stay readable.

A node named ``/encoder/layer.3/attention/MatMul`` lies in scope
``/encoder/layer.3/attention``. At depth ``d`` nodes are grouped by the first ``d``
parts of their scope, and by whether they receive a gradient, so every box is either
shaded or not. StopGradient nodes and graph-level nodes without a scope stay single.
The deepest depth whose box count fits the limit is chosen; if even depth 1 does not
fit, straight chains of single boxes are merged as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Grouping", "group_nodes", "scope_parts"]


@dataclass(frozen=True)
class Grouping:
    """``item[i]``: the box node ``i`` is drawn in; ``depth`` 0 means nothing collapsed."""

    item: list[str]
    depth: int
    chains_merged: bool

    @property
    def boxes(self) -> int:
        return len(set(self.item))


def scope_parts(name: str) -> tuple[str, ...]:
    """The scope of a node name: its ``/``-separated parts without the last one."""
    parts = [p for p in name.split("/") if p]
    return tuple(parts[:-1])


def _key(parts: tuple[str, ...], depth: int, blocked: bool, index: int, single: bool) -> str:
    if single or not parts:
        return f"n{index}"
    prefix = "/" + "/".join(parts[:depth])
    return f"s:{prefix}:{'nograd' if blocked else 'grad'}"


def _by_depth(
    scopes: Sequence[tuple[str, ...]], blocked: Sequence[bool], single: Sequence[bool], depth: int
) -> list[str]:
    return [_key(scopes[i], depth, blocked[i], i, single[i]) for i in range(len(scopes))]


def _merge_chains(
    item: list[str], edges: Sequence[tuple[int, int]], blocked: Sequence[bool], single: Sequence[bool]
) -> list[str]:
    """Merge runs of single nodes where one node feeds exactly one other and nothing else."""
    succ: dict[int, set[int]] = {}
    pred: dict[int, set[int]] = {}
    for a, b in edges:
        if a != b:
            succ.setdefault(a, set()).add(b)
            pred.setdefault(b, set()).add(a)
    merged = list(item)
    for a in range(len(item)):  # node indices are in topological order
        nexts = succ.get(a, set())
        if merged[a].startswith("s:") or single[a] or len(nexts) != 1:
            continue
        (b,) = nexts
        if merged[b].startswith("s:") or single[b] or len(pred.get(b, ())) != 1 or blocked[a] != blocked[b]:
            continue
        if not merged[a].startswith("c"):
            merged[a] = f"c{a}:{'nograd' if blocked[a] else 'grad'}"
        merged[b] = merged[a]
    return merged


def group_nodes(
    names: Sequence[str],
    blocked: Sequence[bool],
    single: Sequence[bool],
    edges: Sequence[tuple[int, int]],
    limit: int,
    attach: Mapping[int, int] | None = None,
) -> Grouping:
    """Boxes for nodes ``names`` so that at most about ``limit`` are drawn.

    ``attach`` maps a node (a Constant, say) to the node whose box it joins when collapsing.
    """
    n = len(names)
    if n <= limit:
        return Grouping([f"n{i}" for i in range(n)], 0, False)
    grouping = _group(names, blocked, single, edges, limit, attach or {})
    return grouping


def _attached(item: list[str], attach: Mapping[int, int]) -> list[str]:
    result = list(item)
    for node, host in attach.items():
        result[node] = item[host]
    return result


def _group(
    names: Sequence[str],
    blocked: Sequence[bool],
    single: Sequence[bool],
    edges: Sequence[tuple[int, int]],
    limit: int,
    attach: Mapping[int, int],
) -> Grouping:
    n = len(names)
    scopes = [scope_parts(name) for name in names]
    max_depth = max((len(s) for s in scopes), default=0)
    best: list[str] | None = None
    best_depth = 0
    for depth in range(max_depth, 0, -1):
        item = _attached(_by_depth(scopes, blocked, single, depth), attach)
        if len(set(item)) <= limit:
            best = item
            best_depth = min(depth, max(len(scopes[i]) for i in range(n) if not single[i]))
            break
    if best is not None:
        return Grouping(best, best_depth, False)
    item = _by_depth(scopes, blocked, single, 1) if max_depth else [f"n{i}" for i in range(n)]
    item = _attached(_merge_chains(item, edges, blocked, single), attach)
    return Grouping(item, 1 if max_depth else 0, True)
