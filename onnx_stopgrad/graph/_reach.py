"""Reachability over tensor names, across every graph of a model.

Each node links each tensor it reads (inputs, and through its subgraph nodes the outer
tensors they read) to each of its outputs; a subgraph's outputs link to its holder's
outputs. Three link sets are kept: every link, the *open* links (not out of a
StopGradient) and the *gradient* links ONNX Runtime differentiates
(:func:`~._differentiable.differentiable_inputs`, float outputs only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import onnx

from ._differentiable import carries_gradient, differentiable_inputs
from ._walk import MAX_DEPTH, is_stop_gradient, node_label, scope_path, subgraph_attributes, too_deep_error

__all__ = ["StopLink", "TensorLinks", "gradient_reach", "reach_back"]


@dataclass(frozen=True)
class StopLink:
    """A StopGradient node: its label, the path of its graph, its input and output."""

    label: str
    path: str
    input: str
    output: str


def reach_back(start: Iterable[str], preds: Mapping[str, Iterable[str]]) -> set[str]:
    """``start`` and every tensor some tensor of ``start`` is computed from via ``preds``."""
    seen = set(start)
    stack = list(seen)
    while stack:
        for pred in preds.get(stack.pop(), ()):
            if pred not in seen:
                seen.add(pred)
                stack.append(pred)
    return seen


class TensorLinks:
    """Links between the tensor names of a graph and its subgraphs."""

    def __init__(self, graph: onnx.GraphProto, types: Mapping[str, int]) -> None:
        self.all_preds: dict[str, set[str]] = defaultdict(set)
        self.open_preds: dict[str, set[str]] = defaultdict(set)
        self.grad_preds: dict[str, set[str]] = defaultdict(set)
        self.stops: list[StopLink] = []
        #: (node label, graph path, outputs) of every node, in walk order.
        self.node_outputs: list[tuple[str, str, tuple[str, ...]]] = []
        self._types = types
        self._add_graph(graph, "", 0)

    def _add_graph(self, graph: onnx.GraphProto, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise too_deep_error()
        types = self._types
        for index, node in enumerate(graph.node):
            label = node_label(node, index)
            sources = [name for name in node.input if name]
            carried = differentiable_inputs(node, types)
            if node.attribute:
                for attribute, sub in subgraph_attributes(node):
                    self._add_graph(sub, scope_path(path, label, attribute), depth + 1)
                    sources.extend(out.name for out in sub.output if out.name)
                    carried.extend(o.name for o in sub.output if o.name and carries_gradient(o.name, types))
            outputs = tuple(name for name in node.output if name)
            self.node_outputs.append((label, path, outputs))
            stop = is_stop_gradient(node)
            if stop and sources and outputs:
                self.stops.append(StopLink(label, path, sources[0], outputs[0]))
            all_preds, open_preds, grad_preds = self.all_preds, self.open_preds, self.grad_preds
            for out in outputs:
                all_preds[out].update(sources)
                if not stop:
                    open_preds[out].update(sources)
                if carried and carries_gradient(out, types):
                    grad_preds[out].update(carried)


def gradient_reach(
    model: onnx.ModelProto, targets: Iterable[str], types: Mapping[str, int] | None = None
) -> set[str]:
    """Tensors ONNX Runtime carries a gradient for towards ``targets``: float tensors on a
    path of differentiated inputs that crosses no StopGradient."""
    from ._differentiable import element_types

    types = element_types(model) if types is None else types
    links = TensorLinks(model.graph, types)
    return reach_back([t for t in targets if carries_gradient(t, types)], links.grad_preds)
