"""Gradient scaling and straight-through constructs: build them, find them, take them out.

Both are made of one or two StopGradient nodes and standard ops, so ONNX Runtime training
needs no new kernel. With ``s = stop(x)`` (a StopGradient of ``x``):

* gradient scale by ``f``: ``y = s - |f| * z`` with ``z = s - x`` for ``f >= 0`` and
  ``z = x - s`` for ``f < 0``. Forward ``z`` is ``+0`` for finite ``x``, ``|f| * +0`` is
  ``+0`` (no overflow for any finite ``f``) and ``s - +0`` is ``x`` bit for bit, ``-0``
  included. Backward ``dy/dx = f``.
* straight-through from ``x`` to ``q``: ``y = stop(q) - (s - x)``. Forward ``q`` bit for
  bit (finite ``x``); backward ``dy/dx = 1`` and nothing flows into ``q``'s producers.

A non-finite ``x`` makes ``z`` NaN, so ``y`` is NaN (see docs/gradient-family.md).

Every node of a construct is named ``<prefix>/<role>`` with one prefix per construct,
``<tensor>/GradScale`` or ``<tensor>/StraightThrough`` (plus ``_N`` on a clash), and
carries a metadata entry with its kind. :func:`find_constructs` recognises a construct
by those names *and* its exact structure, so each one is a single unit for listing,
removal, analysis and drawing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import onnx

from .._names import DOMAIN, OP_TYPE, OPSET_VERSION
from ..errors import InvalidModelError
from ..graph import (
    FLOAT_TYPES,
    inferred_graph,
    is_stop_gradient,
    iter_nodes,
    node_label,
    node_reads,
    not_utf8_error,
    subgraphs,
)
from .reports import ConstructInfo

__all__ = [
    "METADATA_KEY",
    "SCALE",
    "STRAIGHT_THROUGH",
    "Construct",
    "allocate_prefix",
    "check_float",
    "describe",
    "element_type",
    "ensure_opset",
    "find_constructs",
    "gradient_view",
    "inferred_graph",
    "is_construct_node",
    "members",
    "node_readers",
    "scale_nodes",
    "straight_through_nodes",
    "take_out",
]

#: Construct kinds (the ``kind`` of :class:`Construct`, in JSON and node metadata).
SCALE = "gradient_scale"
STRAIGHT_THROUGH = "straight_through"
#: Node metadata key holding the construct's kind (and, for a scale, ``kind:factor``).
METADATA_KEY = "onnx_stopgrad.construct"

_TAGS = {SCALE: "GradScale", STRAIGHT_THROUGH: "StraightThrough"}
_KIND_OF_TAG = {tag: kind for kind, tag in _TAGS.items()}
_PREFIX = re.compile(r"^(?P<base>.*)/(?P<tag>GradScale|StraightThrough)(?:_\d+)?$")
_ROLES = {
    SCALE: ("StopGradient", "Zero", "Factor", "Scale", "Output"),
    STRAIGHT_THROUGH: ("StopInput", "StopQuantized", "Zero", "Output"),
}


@dataclass(frozen=True)
class Construct:
    """One construct found in the main graph."""

    kind: str
    #: Common prefix of its node names, e.g. ``h/GradScale``.
    name: str
    #: The tensor whose gradient is scaled or passed straight through.
    input: str
    #: The tensor its readers read instead of ``input`` (scale) or ``quantized`` (straight-through).
    output: str
    #: Gradient factor (1.0 for straight-through).
    factor: float
    #: Straight-through: the forward value ``q`` the output carries; "" for a scale.
    quantized: str
    #: Indices of its nodes in the main graph.
    nodes: tuple[int, ...]
    #: Node outputs inside the construct (its output excluded).
    internal: tuple[str, ...]

    @property
    def original(self) -> str:
        """What the readers of ``output`` read once the construct is taken out."""
        return self.quantized or self.input


def _metadata(node: onnx.NodeProto, value: str) -> onnx.NodeProto:
    entry = node.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, value
    return node


def is_construct_node(node: onnx.NodeProto) -> bool:
    """Whether ``node`` was made as part of a construct (it carries the construct metadata)."""
    return any(entry.key == METADATA_KEY for entry in node.metadata_props)


def scale_nodes(prefix: str, x: str, y: str, factor: float, elem_type: int) -> list[onnx.NodeProto]:
    """The nodes of ``y = stop(x) - |factor| * z`` (see the module docstring), in order."""
    stopped, zero, size, scaled = (
        f"{prefix}/{part}" for part in ("stopped", "zero", "factor", "scaled_zero")
    )
    zero_inputs = [stopped, x] if factor >= 0 else [x, stopped]
    value = onnx.helper.make_tensor("value", elem_type, [], [abs(factor)])
    tag = f"{SCALE}:{factor!r}"
    nodes = [
        onnx.helper.make_node(OP_TYPE, [x], [stopped], name=f"{prefix}/StopGradient", domain=DOMAIN),
        onnx.helper.make_node("Sub", zero_inputs, [zero], name=f"{prefix}/Zero"),
        onnx.helper.make_node("Constant", [], [size], name=f"{prefix}/Factor", value=value),
        onnx.helper.make_node("Mul", [zero, size], [scaled], name=f"{prefix}/Scale"),
        onnx.helper.make_node("Sub", [stopped, scaled], [y], name=f"{prefix}/Output"),
    ]
    return [_metadata(node, tag) for node in nodes]


def straight_through_nodes(prefix: str, x: str, q: str, y: str) -> list[onnx.NodeProto]:
    """The nodes of ``y = stop(q) - (stop(x) - x)``, in order."""
    stopped_x, stopped_q, zero = (
        f"{prefix}/{part}" for part in ("stopped_input", "stopped_quantized", "zero")
    )
    nodes = [
        onnx.helper.make_node(OP_TYPE, [x], [stopped_x], name=f"{prefix}/StopInput", domain=DOMAIN),
        onnx.helper.make_node(OP_TYPE, [q], [stopped_q], name=f"{prefix}/StopQuantized", domain=DOMAIN),
        onnx.helper.make_node("Sub", [stopped_x, x], [zero], name=f"{prefix}/Zero"),
        onnx.helper.make_node("Sub", [stopped_q, zero], [y], name=f"{prefix}/Output"),
    ]
    return [_metadata(node, STRAIGHT_THROUGH) for node in nodes]


def allocate_prefix(model: onnx.ModelProto, base: str, kind: str) -> str:
    """``<base>/GradScale`` (or ``StraightThrough``), with ``_N`` added until no name uses it."""
    names = _all_names(model)
    stem = f"{base}/{_TAGS[kind]}"
    counter = 0
    while True:
        prefix = stem if counter == 0 else f"{stem}_{counter}"
        head = prefix + "/"
        if prefix not in names and not any(name.startswith(head) for name in names):
            return prefix
        counter += 1


def _all_names(model: onnx.ModelProto) -> set[str]:
    """Every node name and tensor name of the model, subgraphs included."""
    graph = model.graph
    names: set[str] = set()
    for node, owner in iter_nodes(graph):
        names.add(node.name)
        names.update(node.output)
        if owner is not graph:
            names.update(v.name for v in owner.input)
    names.update(v.name for v in [*graph.input, *graph.output, *graph.value_info])
    names.update(t.name for t in graph.initializer)
    return names


def element_type(model: onnx.ModelProto, name: str) -> int | None:
    """The element type of main-graph tensor ``name``, from the model or shape inference."""
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name == name and value.type.tensor_type.elem_type:
            return value.type.tensor_type.elem_type
    for tensor in graph.initializer:
        if tensor.name == name:
            return tensor.data_type
    for node in graph.node:
        if node.op_type == "Constant" and not node.domain and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    return attr.t.data_type
    inferred = _inferred_types(model)
    return inferred.get(name)


def _inferred_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = inferred_graph(model)
    return {
        value.name: value.type.tensor_type.elem_type
        for value in [*graph.value_info, *graph.output, *graph.input]
        if value.type.tensor_type.elem_type
    }


def check_float(model: onnx.ModelProto, name: str, what: str) -> int:
    """The element type of ``name``; refuses a non-float or unknown type in one line."""
    elem_type = element_type(model, name)
    if elem_type is None:
        raise InvalidModelError(
            f"cannot tell the element type of {what} {name!r}; run onnx.shape_inference on the model first"
        )
    if elem_type not in FLOAT_TYPES:
        type_name = onnx.TensorProto.DataType.Name(elem_type).lower()
        raise InvalidModelError(
            f"{what} {name!r} is {type_name}: only floating-point tensors carry gradients"
        )
    return elem_type


def ensure_opset(model: onnx.ModelProto) -> bool:
    """Import the StopGradient domain once; True if it was added now."""
    if any(opset.domain == DOMAIN for opset in model.opset_import):
        return False
    model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))
    return True


def find_constructs(model: onnx.ModelProto) -> list[Construct]:
    """Every gradient-scale and straight-through construct of the main graph, in node order."""
    graph = model.graph
    try:
        if not any(node.op_type == "Sub" and node.name.endswith("/Output") for node in graph.node):
            return []  # the common case, decided in one cheap pass
    except TypeError:  # protobuf hands out a name that is not UTF-8 as bytes
        raise not_utf8_error() from None
    by_name = {node.name: index for index, node in enumerate(graph.node) if node.name}
    readers: dict[str, set[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node_reads(node):
            readers.setdefault(name, set()).add(index)
    outputs = {value.name for value in graph.output}
    found = []
    for node in graph.node:
        if node.op_type != "Sub" or node.domain or not node.name.endswith("/Output"):
            continue
        match = _PREFIX.match(node.name[: -len("/Output")])
        if match is None:
            continue
        prefix = node.name[: -len("/Output")]
        kind = _KIND_OF_TAG[match.group("tag")]
        indices = [by_name.get(f"{prefix}/{role}") for role in _ROLES[kind]]
        if any(i is None for i in indices):
            continue
        nodes = [graph.node[i] for i in indices if i is not None]
        construct = _match(kind, prefix, nodes, [i for i in indices if i is not None], graph)
        if construct is None:
            continue
        members = set(construct.nodes)
        private = all(
            readers.get(name, set()) <= members and name not in outputs for name in construct.internal
        )
        if private:
            found.append(construct)
    return found


def _match(
    kind: str, prefix: str, nodes: list[onnx.NodeProto], indices: list[int], graph: onnx.GraphProto
) -> Construct | None:
    """The construct these nodes form, or None when their structure is not exactly it."""
    if kind == SCALE:
        stop, zero, factor_node, mul, out = nodes
        if not (is_stop_gradient(stop) and _is(zero, "Sub") and _is(mul, "Mul") and len(out.input) == 2):
            return None
        x, stopped = stop.input[0], stop.output[0]
        if list(out.input) != [stopped, mul.output[0]] or mul.input[0] != zero.output[0]:
            return None
        if list(zero.input) == [stopped, x]:
            sign = 1.0
        elif list(zero.input) == [x, stopped]:
            sign = -1.0
        else:
            return None
        size = _constant_value(factor_node, mul.input[1], graph)
        if size is None:
            return None
        recorded = _recorded_factor(out)  # the exact value asked for; the Constant holds it rounded
        factor = recorded if recorded is not None and recorded * sign > 0 else sign * size
        internal: tuple[str, ...] = (stopped, zero.output[0], mul.input[1], mul.output[0])
        return Construct(SCALE, prefix, x, out.output[0], factor, "", tuple(indices), internal)
    stop_x, stop_q, zero, out = nodes
    if not (is_stop_gradient(stop_x) and is_stop_gradient(stop_q) and _is(zero, "Sub") and _is(out, "Sub")):
        return None
    x, q = stop_x.input[0], stop_q.input[0]
    if list(zero.input) != [stop_x.output[0], x] or list(out.input) != [stop_q.output[0], zero.output[0]]:
        return None
    internal = (stop_x.output[0], stop_q.output[0], zero.output[0])
    return Construct(STRAIGHT_THROUGH, prefix, x, out.output[0], 1.0, q, tuple(indices), internal)


def _is(node: onnx.NodeProto, op_type: str) -> bool:
    return node.op_type == op_type and not node.domain and len(node.input) == 2 and len(node.output) == 1


def _constant_value(node: onnx.NodeProto, name: str, graph: onnx.GraphProto) -> float | None:
    """The scalar a Constant node (or, once ONNX Runtime folded it, an initializer) holds."""
    tensor = None
    if node.op_type == "Constant" and list(node.output) == [name]:
        tensor = next((a.t for a in node.attribute if a.name == "value"), None)
    if tensor is None:
        tensor = next((t for t in graph.initializer if t.name == name), None)
    if tensor is None or len(tensor.dims) != 0:
        return None
    value = float(onnx.numpy_helper.to_array(tensor))
    return value if math.isfinite(value) and value >= 0 else None


def _recorded_factor(node: onnx.NodeProto) -> float | None:
    for entry in node.metadata_props:
        if entry.key == METADATA_KEY and entry.value.startswith(f"{SCALE}:"):
            try:
                return float(entry.value.split(":", 1)[1])
            except ValueError:
                return None
    return None


def node_readers(model: onnx.ModelProto, name: str, skip: Iterable[int] = ()) -> tuple[list[int], list[int]]:
    """``(direct, nested)``: main-graph nodes reading ``name`` as an input / inside a subgraph."""
    skipped = set(skip)
    direct, nested = [], []
    for index, node in enumerate(model.graph.node):
        if index in skipped:
            continue
        if name in node.input:
            direct.append(index)
        elif name in node_reads(node):
            nested.append(index)
    return direct, nested


def take_out(
    model: onnx.ModelProto, constructs: Sequence[Construct]
) -> list[tuple[Construct, tuple[str, ...]]]:
    """Remove ``constructs``: their readers read the original tensor again.

    Returns each construct with the labels of the nodes rewired. The graph is as it was
    before the construct went in (nodes, value_info; the opset import is the caller's).
    """
    graph = model.graph
    done = []
    doomed: set[int] = set()
    for construct in constructs:
        labels = []
        for index, node in enumerate(graph.node):
            if index in construct.nodes:
                continue
            touched = False
            for slot, name in enumerate(node.input):
                if name == construct.output:
                    node.input[slot] = construct.original
                    touched = True
            for sub in subgraphs(node):
                touched |= _rename_free(sub, construct.output, construct.original)
            if touched:
                labels.append(node_label(node, index))
        for value in graph.output:
            if value.name == construct.output:
                value.name = construct.original
        doomed.update(construct.nodes)
        gone = {*construct.internal, construct.output}
        for index in reversed(range(len(graph.value_info))):
            if graph.value_info[index].name in gone:
                del graph.value_info[index]
        for index in reversed(range(len(graph.initializer))):
            if graph.initializer[index].name in gone:  # a factor ONNX Runtime folded into one
                del graph.initializer[index]
        done.append((construct, tuple(dict.fromkeys(labels))))
    for index in sorted(doomed, reverse=True):
        del graph.node[index]
    return done


def _rename_free(graph: onnx.GraphProto, old: str, new: str) -> bool:
    """Rename reads of the outer tensor ``old`` inside ``graph`` (unless it defines its own)."""
    if any(v.name == old for v in graph.input) or any(t.name == old for t in graph.initializer):
        return False
    touched = False
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name == old:
                node.input[slot] = new
                touched = True
        for sub in subgraphs(node):
            touched |= _rename_free(sub, old, new)
        if old in node.output:
            return touched
    for value in graph.output:
        if value.name == old:
            value.name = new
            touched = True
    return touched


def describe(
    model: onnx.ModelProto, constructs: Sequence[Construct] | None = None
) -> tuple[ConstructInfo, ...]:
    """:class:`ConstructInfo` for each construct (default: every one in ``model``)."""
    graph = model.graph
    found = find_constructs(model) if constructs is None else constructs
    infos = []
    for construct in found:
        direct, nested = node_readers(model, construct.output, construct.nodes)
        consumers = tuple(node_label(graph.node[i], i) for i in sorted(direct + nested))
        nodes = tuple(node_label(graph.node[i], i) for i in construct.nodes)
        infos.append(
            ConstructInfo(
                construct.kind, construct.name, construct.input, construct.output,
                construct.factor, construct.quantized, consumers, nodes,
            )
        )  # fmt: skip
    return tuple(infos)


def members(model: onnx.ModelProto) -> dict[int, Construct]:
    """Main-graph node index -> the construct it belongs to."""
    return {index: construct for construct in find_constructs(model) for index in construct.nodes}


def gradient_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """For gradient-flow analysis: ``model`` (or a copy) with each construct's stop of ``x`` as Identity.

    A construct passes a gradient to its input, so the parameters behind it are neither
    frozen nor partly blocked by it; what feeds a straight-through's ``q`` stays stopped.
    Returns ``model`` itself when it has no construct.
    """
    constructs = find_constructs(model)
    if not constructs:
        return model
    view = onnx.ModelProto()
    view.CopyFrom(model)
    for construct in constructs:
        node = view.graph.node[construct.nodes[0]]  # StopGradient / StopInput: the stop of x
        node.op_type, node.domain = "Identity", ""
    return view
