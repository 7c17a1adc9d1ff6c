"""Gradient-flow analysis: which parameters the StopGradient nodes cut off from the loss.

A parameter is a floating-point initializer of the main graph. Reading the model's
tensor links (:class:`~._reach.TensorLinks`) back from the targets:

* ``trainable``: ONNX Runtime differentiates it: it reaches a target through gradient
  links only (no StopGradient, no input ORT does not differentiate).
* ``frozen``: reaches a target only through StopGradient nodes.
* ``constant``: reaches a target without crossing a stop, but only through inputs ONNX
  Runtime does not differentiate (a ``Pow`` exponent, a ``Reshape`` shape, ...).
* ``partially_blocked``: trainable, but some of its paths cross a StopGradient.
* ``unreachable``: no path to any target at all.

``scalars`` lists the trainable parameters of rank 0. Exporters write Python scalars
(attention scales, mask fill values, epsilons) as such initializers, PyTorch never trains
them (a module's parameters have a shape; a one-output Linear's bias is ``(1,)``), and
training some of them makes ONNX Runtime 1.19 compute wrong gradients for *other*
parameters (the ``Where`` fill values of a dynamo-exported BERT corrupt the embedding
gradients). So the default ``requires_grad`` leaves them constant; listed
explicitly, they train.

Some models ONNX Runtime 1.19 cannot train at all, whatever the parameter lists:
:func:`~._unsupported.nodes_ort_cannot_differentiate` finds them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import onnx

from ..errors import InvalidModelError
from ._differentiable import FLOAT_TYPES, element_types
from ._reach import TensorLinks, reach_back

__all__ = ["GradientFlow", "analyze_gradient_flow", "parameter_names"]


@dataclass(frozen=True)
class GradientFlow:
    """Result of :func:`analyze_gradient_flow`; parameter names sorted within each group."""

    targets: tuple[str, ...]
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    partially_blocked: tuple[str, ...]
    unreachable: tuple[str, ...]
    #: For each frozen or partially blocked parameter, the StopGradient nodes on its paths.
    blocking_stops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Nodes that feed a target only through StopGradient nodes (no gradient reaches them).
    blocked_nodes: tuple[str, ...] = ()
    #: Parameters that reach a target only through inputs ONNX Runtime does not differentiate.
    constant: tuple[str, ...] = ()
    #: Every tensor with a path to a target (through stops or not).
    reaches_targets: frozenset[str] = frozenset()
    #: Every tensor with a path to a target that ONNX Runtime differentiates.
    gradient_reach: frozenset[str] = frozenset()
    #: Trainable parameters of rank 0: left constant by default (module docstring).
    scalars: tuple[str, ...] = ()

    @property
    def trained_by_default(self) -> tuple[str, ...]:
        """What a derived ``requires_grad`` trains: ``trainable`` less ``scalars``."""
        scalars = set(self.scalars)
        return tuple(p for p in self.trainable if p not in scalars)


def parameter_names(graph: onnx.GraphProto) -> list[str]:
    """Names of the main graph's float initializers; a name that is not UTF-8 is a corrupt model."""
    names = []
    for tensor in graph.initializer:
        if tensor.data_type in FLOAT_TYPES:
            try:
                name = tensor.name
            except UnicodeDecodeError:  # protobuf does not check proto2 strings when parsing
                name = None
            if not isinstance(name, str):
                raise InvalidModelError("an initializer name is not valid UTF-8; the model file is corrupt")
            names.append(name)
    return names


def analyze_gradient_flow(
    model: onnx.ModelProto | onnx.GraphProto,
    targets: Iterable[str] | None = None,
    types: Mapping[str, int] | None = None,
) -> GradientFlow:
    """Classify the float initializers of ``model`` by how gradients reach them.

    ``targets`` are the tensors a loss is computed from (default: every graph output).
    ``types`` maps tensor names to element types (default: inferred from ``model``; for
    a bare GraphProto, what the graph declares).
    """
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    if types is None:
        types = element_types(model) if isinstance(model, onnx.ModelProto) else _declared_types(graph)
    target_names = tuple(targets) if targets is not None else tuple(o.name for o in graph.output)
    links = TensorLinks(graph, types)
    grad_reach = reach_back(target_names, links.grad_preds)
    open_reach = reach_back(target_names, links.open_preds)
    any_reach = reach_back(target_names, links.all_preds)

    params = sorted(parameter_names(graph))
    behind_stop: dict[str, list[str]] = defaultdict(list)
    for stop in links.stops:
        if stop.output in any_reach:
            for name in reach_back([stop.input], links.all_preds):
                behind_stop[name].append(stop.label)

    trainable = [p for p in params if p in grad_reach]
    rank_zero = {t.name for t in graph.initializer if not t.dims}
    scalars = [p for p in trainable if p in rank_zero]
    constant = [p for p in params if p in open_reach and p not in grad_reach]
    frozen = [p for p in params if p in any_reach and p not in open_reach]
    partial = [p for p in trainable if p in behind_stop]
    unreachable = [p for p in params if p not in any_reach]
    blocked_nodes = [
        label
        for label, _path, outputs in links.node_outputs
        if outputs and any(o in any_reach for o in outputs) and not any(o in open_reach for o in outputs)
    ]
    return GradientFlow(
        targets=target_names,
        trainable=tuple(trainable),
        frozen=tuple(frozen),
        partially_blocked=tuple(partial),
        unreachable=tuple(unreachable),
        blocking_stops={p: tuple(dict.fromkeys(behind_stop[p])) for p in frozen + partial},
        blocked_nodes=tuple(blocked_nodes),
        constant=tuple(constant),
        reaches_targets=frozenset(any_reach),
        gradient_reach=frozenset(grad_reach),
        scalars=tuple(scalars),
    )


def _declared_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update((t.name, t.data_type) for t in graph.initializer)
    return {name: elem for name, elem in types.items() if elem}
