"""Choosing tensors by name: every name in a model, globs, regexes, and suggestions."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence

import onnx

from ..errors import InvalidOptionError, TensorNotFoundError
from ..graph import is_stop_gradient, iter_nodes

__all__ = ["closest_names", "node_names", "not_found_message", "select_tensors", "tensor_names"]


def tensor_names(model: onnx.ModelProto, include_stops: bool = False) -> list[str]:
    """Every tensor defined in any graph of ``model`` (inputs, initializers, node outputs).

    Outputs of StopGradient nodes are left out unless ``include_stops``.
    """
    names: dict[str, None] = {}

    def add_graph(graph: onnx.GraphProto) -> None:
        names.update((value.name, None) for value in graph.input)
        names.update((tensor.name, None) for tensor in graph.initializer)

    add_graph(model.graph)
    seen_graphs = {id(model.graph)}
    for node, graph in iter_nodes(model.graph):
        if id(graph) not in seen_graphs:
            seen_graphs.add(id(graph))
            add_graph(graph)
        if include_stops or not is_stop_gradient(node):
            names.update((name, None) for name in node.output)
    names.pop("", None)
    return list(names)


def node_names(model: onnx.ModelProto) -> list[str]:
    """The names of all named nodes, subgraphs included."""
    return [node.name for node, _ in iter_nodes(model.graph) if node.name]


def select_tensors(
    model: onnx.ModelProto,
    globs: Iterable[str] = (),
    regexes: Iterable[str] = (),
) -> list[str]:
    """Tensor names matching any shell glob (whole name) or regex (``re.search``).

    Every pattern must match at least one tensor, otherwise TensorNotFoundError.
    """
    globs, regexes = list(globs), list(regexes)
    if not globs and not regexes:
        return []
    candidates = tensor_names(model)
    chosen: dict[str, None] = {}
    for pattern in globs:
        hits = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise TensorNotFoundError(f"--match {pattern!r} matches no tensor{_hint(pattern, candidates)}")
        chosen.update(dict.fromkeys(hits))
    for expression in regexes:
        try:
            compiled = re.compile(expression)
        except re.error as exc:
            raise InvalidOptionError(
                f"--regex {expression!r} is not a valid regular expression ({exc})"
            ) from exc
        hits = [name for name in candidates if compiled.search(name)]
        if not hits:
            raise TensorNotFoundError(
                f"--regex {expression!r} matches no tensor{_hint(expression, candidates)}"
            )
        chosen.update(dict.fromkeys(hits))
    return list(chosen)


def closest_names(name: str, candidates: Sequence[str], limit: int = 3) -> list[str]:
    """Up to ``limit`` candidates that look most like ``name`` (difflib)."""
    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.5)
    if not close:  # a fragment of a long name: try substring matches
        close = [c for c in candidates if name and name in c][:limit]
    return close


def _hint(name: str, candidates: Sequence[str]) -> str:
    close = closest_names(name.strip("*?^$"), candidates)
    if close:
        return "; close names: " + ", ".join(close)
    return "; check the pattern (names are case-sensitive; Netron shows them)"


def not_found_message(kind: str, name: str, candidates: Sequence[str]) -> str:
    """``"no tensor 'x' in the model; did you mean 'y', 'z'?"``."""
    close = closest_names(name, candidates)
    if close:
        return f"no {kind} {name!r} in the model; did you mean " + ", ".join(map(repr, close)) + "?"
    return f"no {kind} {name!r} in the model; check the name (Netron shows them)"
