"""Mutators for fuzzing: raw bytes and structure-aware protobuf edits.

Both take a :class:`Draw`, a source of choices, so the same code runs under hypothesis
(``HypothesisDraw``: choices shrink to a minimal failing case) and in the long campaign
(``RandomDraw``: a seeded ``random.Random``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import onnx
from onnx import AttributeProto, TensorProto

from onnx_stopgrad._names import DOMAIN, OP_TYPE

__all__ = [
    "OUTSIDE_NAME",
    "STRUCTURE_MUTATIONS",
    "Draw",
    "HypothesisDraw",
    "RandomDraw",
    "mutate_bytes",
    "mutate_model",
]

T = TypeVar("T")

#: File name of the sentinel placed one directory above each case directory.
OUTSIDE_NAME = "outside_sentinel.bin"

_HUGE_DIMS = (2**62, 2**63 - 1, -1, -(2**62), 0, 2**31, 2**32 + 1)
_OP_TYPES = ("Relu", "Identity", "If", "Loop", "Scan", "MatMul", "Add", "Constant", OP_TYPE, "NoSuchOp", "")


class Draw(Protocol):
    def int(self, low: int, high: int) -> int: ...
    def choice(self, items: Sequence[T]) -> T: ...
    def bytes(self, max_size: int) -> bytes: ...


class RandomDraw:
    """Choices from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def bytes(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


class HypothesisDraw:
    """Choices drawn from hypothesis' ``data()`` strategy (shrinkable)."""

    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def int(self, low: int, high: int) -> int:
        return self.data.draw(self.st.integers(low, high))

    def choice(self, items: Sequence[T]) -> T:
        return items[self.data.draw(self.st.integers(0, len(items) - 1))]

    def bytes(self, max_size: int) -> bytes:
        return self.data.draw(self.st.binary(max_size=max_size))


# --- raw bytes --------------------------------------------------------------------------


def mutate_bytes(data: bytes, draw: Draw, rounds: int | None = None) -> bytes:
    """Flip, truncate, insert, delete, duplicate or overwrite bytes of ``data``."""
    buf = bytearray(data)
    for _ in range(rounds if rounds is not None else draw.int(1, 4)):
        kind = draw.choice(("flip", "truncate", "insert", "delete", "duplicate", "varint", "set"))
        at = draw.int(0, max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[at] ^= 1 << draw.int(0, 7)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = draw.bytes(16)
        elif kind == "delete":
            del buf[at : at + draw.int(1, 32)]
        elif kind == "duplicate":
            buf[at:at] = buf[at : at + draw.int(1, 64)]
        elif kind == "varint":  # a length prefix or number that claims far too much
            buf[at:at] = draw.choice((b"\xff\xff\xff\xff\x0f", b"\xff" * 9 + b"\x01", b"\x80" * 10))
        elif kind == "set" and buf:
            buf[at] = draw.int(0, 255)
    return bytes(buf)


# --- structure-aware ----------------------------------------------------------------------


def _all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    graphs = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                graphs.extend(_all_graphs(attr.g))
            for sub in attr.graphs:
                graphs.extend(_all_graphs(sub))
    return graphs


def _tensor_names(graph: onnx.GraphProto) -> list[str]:
    names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    for node in graph.node:
        names.extend(node.output)
    return names or ["x"]


def _pick_graph(model: onnx.ModelProto, draw: Draw) -> onnx.GraphProto:
    return draw.choice(_all_graphs(model.graph))


def _pick_node(graph: onnx.GraphProto, draw: Draw) -> onnx.NodeProto | None:
    return graph.node[draw.int(0, len(graph.node) - 1)] if graph.node else None


def _dangling_input(model: onnx.ModelProto, draw: Draw) -> None:
    node = _pick_node(_pick_graph(model, draw), draw)
    if node is not None:
        name = draw.choice(("nobody_makes_this", "", "x", "y\x00z", "ünïcode", "a" * 300))
        if node.input:
            node.input[draw.int(0, len(node.input) - 1)] = name
        else:
            node.input.append(name)


def _cycle(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    if len(graph.node) >= 1:
        late = graph.node[draw.int(0, len(graph.node) - 1)]
        early = graph.node[draw.int(0, len(graph.node) - 1)]
        if late.output and early.input:
            early.input[0] = late.output[0]


def _duplicate_node(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    node = _pick_node(graph, draw)
    if node is not None:
        copy = graph.node.add()
        copy.CopyFrom(node)
        if draw.int(0, 1):
            copy.name = node.name + "_dup"


def _reorder(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    nodes = list(graph.node)
    if len(nodes) > 1:
        i, j = draw.int(0, len(nodes) - 1), draw.int(0, len(nodes) - 1)
        nodes[i], nodes[j] = nodes[j], nodes[i]
        del graph.node[:]
        graph.node.extend(nodes)


def _delete(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    field = draw.choice(("node", "input", "output", "initializer", "value_info"))
    items = getattr(graph, field)
    if len(items):
        del items[draw.int(0, len(items) - 1)]


def _op_type(model: onnx.ModelProto, draw: Draw) -> None:
    node = _pick_node(_pick_graph(model, draw), draw)
    if node is not None:
        node.op_type = draw.choice(_OP_TYPES)
        node.domain = draw.choice(("", DOMAIN, "com.microsoft", "no.such.domain"))


def _huge_dim(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    candidates = [v for v in values if v.type.HasField("tensor_type")]
    if candidates and draw.int(0, 2):
        shape = draw.choice(candidates).type.tensor_type.shape
        dim = (
            shape.dim.add()
            if not shape.dim or not draw.int(0, 2)
            else shape.dim[draw.int(0, len(shape.dim) - 1)]
        )
        dim.dim_value = draw.choice(_HUGE_DIMS)
    elif graph.initializer:
        tensor = graph.initializer[draw.int(0, len(graph.initializer) - 1)]
        if tensor.dims:
            tensor.dims[draw.int(0, len(tensor.dims) - 1)] = draw.choice(_HUGE_DIMS)
        else:
            tensor.dims.append(draw.choice(_HUGE_DIMS))


def _tensor_type(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    if graph.initializer:
        tensor = graph.initializer[draw.int(0, len(graph.initializer) - 1)]
        tensor.data_type = draw.choice((0, TensorProto.STRING, TensorProto.DOUBLE, TensorProto.BOOL, 999))
    elif graph.input:
        graph.input[0].type.tensor_type.elem_type = draw.choice((0, TensorProto.STRING, 999))


def _external_location(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    if not graph.initializer:
        return
    tensor = graph.initializer[draw.int(0, len(graph.initializer) - 1)]
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    location = draw.choice(
        (
            f"../{OUTSIDE_NAME}",
            f"../../{OUTSIDE_NAME}",
            "/etc/passwd",
            f"sub/../../{OUTSIDE_NAME}",
            "link_outside.bin",  # a symlink the harness plants, pointing outside
            "weights.bin",
            "missing.bin",
            "",
            "a\x00b",
            ".",
            "x" * 5000,
        )
    )
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=location)
    if draw.int(0, 1):
        numbers = ("0", str(2**62), "-5", "7", "16", "\u00b2", "\u0663", " 8", "0x10", "1e3", "")
        tensor.external_data.add(key="offset", value=draw.choice(numbers))
        tensor.external_data.add(key="length", value=draw.choice(numbers))


def _nest(model: onnx.ModelProto, draw: Draw) -> None:
    """Wrap a node in layers of If subgraphs (deep nesting, recursion)."""
    graph = _pick_graph(model, draw)
    node = _pick_node(graph, draw)
    if node is None:
        return
    depth = draw.choice((2, 10, 30, 40, 200))
    inner = onnx.NodeProto()
    inner.CopyFrom(node)
    outputs = list(node.output)
    del node.attribute[:]
    node.op_type, node.domain = "If", ""
    del node.input[:]
    node.input.append("nest_cond")
    current = node
    for level in range(depth):
        sub = current.attribute.add(name="then_branch", type=AttributeProto.GRAPH).g
        sub.name = f"nest{level}"
        for out in outputs:
            sub.output.add(name=out)
        if level == depth - 1:
            sub.node.add().CopyFrom(inner)
        else:
            current = sub.node.add(op_type="If", input=["nest_cond"], output=outputs)


def _opset_and_ir(model: onnx.ModelProto, draw: Draw) -> None:
    kind = draw.int(0, 3)
    if kind == 0:
        model.ir_version = draw.choice((0, 1, 3, 13, 99, 2**62))
    elif kind == 1:
        del model.opset_import[:]
    elif kind == 2 and model.opset_import:
        model.opset_import[0].version = draw.choice((0, 1, 7, 99, 2**62))
    else:
        model.opset_import.add(domain=draw.choice(("", DOMAIN)), version=draw.choice((1, 2, 999)))


def _attribute(model: onnx.ModelProto, draw: Draw) -> None:
    node = _pick_node(_pick_graph(model, draw), draw)
    if node is None:
        return
    if node.attribute and draw.int(0, 1):
        attr = node.attribute[draw.int(0, len(node.attribute) - 1)]
        attr.type = draw.choice((AttributeProto.GRAPH, AttributeProto.INT, AttributeProto.GRAPHS, 0))
        if draw.int(0, 1):
            attr.ClearField("g")
    else:
        attr = node.attribute.add(name=draw.choice(("body", "then_branch", "axis", "")))
        attr.type = draw.choice((AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.TENSOR))
        if attr.type == AttributeProto.GRAPH:
            attr.g.node.add(
                op_type="Identity", input=[draw.choice(_tensor_names(model.graph))], output=["sub_out"]
            )
            attr.g.output.add(name="sub_out")


def _names(model: onnx.ModelProto, draw: Draw) -> None:
    """Duplicate or clash tensor and node names."""
    graph = _pick_graph(model, draw)
    names = _tensor_names(graph)
    node = _pick_node(graph, draw)
    kind = draw.int(0, 3)
    if kind == 0 and node is not None and node.output:
        node.output[0] = draw.choice(names)  # two producers of one tensor
    elif kind == 1 and graph.initializer:
        graph.initializer[draw.int(0, len(graph.initializer) - 1)].name = draw.choice(names)
    elif kind == 2 and node is not None:
        node.name = draw.choice([n.name for n in graph.node] + [""])
    elif graph.output:
        graph.output[draw.int(0, len(graph.output) - 1)].name = draw.choice([*names, "not_a_tensor"])


def _raw_data(model: onnx.ModelProto, draw: Draw) -> None:
    graph = _pick_graph(model, draw)
    if graph.initializer:
        tensor = graph.initializer[draw.int(0, len(graph.initializer) - 1)]
        if tensor.data_location != TensorProto.EXTERNAL:
            tensor.raw_data = draw.bytes(40)


STRUCTURE_MUTATIONS: tuple[Callable[[onnx.ModelProto, Draw], None], ...] = (
    _dangling_input,
    _cycle,
    _duplicate_node,
    _reorder,
    _delete,
    _op_type,
    _huge_dim,
    _tensor_type,
    _external_location,
    _nest,
    _opset_and_ir,
    _attribute,
    _names,
    _raw_data,
)


def mutate_model(model: onnx.ModelProto, draw: Draw, rounds: int | None = None) -> list[str]:
    """Apply 1-3 structure-aware mutations to ``model`` in place; return their names."""
    applied = []
    for _ in range(rounds if rounds is not None else draw.int(1, 3)):
        mutation = draw.choice(STRUCTURE_MUTATIONS)
        mutation(model, draw)
        applied.append(mutation.__name__.lstrip("_"))
    return applied
