"""``SplitToSequence`` + ``SequenceAt`` -> ``Split``: a split ONNX Runtime 1.19 differentiates.

torch's dynamo exporter (``optimize=False``) writes ``tensor.split(size, dim)`` as a
``SplitToSequence`` read by ``SequenceAt`` nodes (GPT-2's query/key/value split). ORT's
gradient builder does not pass through sequence values, so every parameter before the
split stops training ("unreachable from the output"). Where the split sizes, the indices
and the split axis's length are known, the same computation is one ``Split`` node.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import inferred_graph

__all__ = ["split_sequences"]

log = logging.getLogger(__name__)


def split_sequences(model: onnx.ModelProto) -> list[str]:
    """Rewrite each convertible ``SplitToSequence`` in the main graph; one line if any changed."""
    graph = model.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    lengths: dict[str, list[int | None]] | None = None
    changed = 0
    for node in list(graph.node):
        if node.op_type != "SplitToSequence" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        sequence = node.output[0]
        picks = readers.get(sequence, [])
        if sequence in outputs or not picks or any(r.op_type != "SequenceAt" for r in picks):
            continue
        if lengths is None:
            lengths = _shapes(model)
        if _try_rewrite(model, node, picks, lengths):
            changed += 1
    if not changed:
        return []
    return [f"{changed} SplitToSequence node(s) -> Split (ORT 1.19 has no gradient through sequences)"]


def _try_rewrite(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    picks: list[onnx.NodeProto],
    shapes: dict[str, list[int | None]],
) -> bool:
    split = _constant(model, node.input[1])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    shape = shapes.get(node.input[0])
    indices = [_constant(model, p.input[1]) for p in picks]
    if split is None or shape is None or any(i is None or i.size != 1 for i in indices):
        return False
    length = shape[axis] if -len(shape) <= axis < len(shape) else None
    if split.ndim == 1:
        sizes = [int(s) for s in split]
        if length is not None and sum(sizes) != length:
            return False
    elif split.ndim == 0 and length is not None and int(split) > 0:
        step = int(split)
        sizes = [min(step, length - start) for start in range(0, length, step)]
    else:
        return False
    graph = model.graph
    positions = [int(i.reshape(())) % len(sizes) for i in indices]  # type: ignore[union-attr]
    taken = {n for other in graph.node for n in other.output} | {t.name for t in graph.initializer}
    chunks: list[str] = []
    for chunk in range(len(sizes)):  # a chunk picked once keeps the name SequenceAt gave it
        users = [p for p, at in zip(picks, positions, strict=True) if at == chunk]
        chunks.append(users[0].output[0] if len(users) == 1 else _fresh(f"{node.output[0]}_{chunk}", taken))
    copies = [
        onnx.helper.make_node("Identity", [chunks[at]], [p.output[0]])
        for p, at in zip(picks, positions, strict=True)
        if chunks[at] != p.output[0]
    ]
    sizes_name = _fresh(f"{node.output[0]}_sizes", taken)
    if _opset(model) >= 13:
        graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), sizes_name))
        split_node = onnx.helper.make_node("Split", [node.input[0], sizes_name], chunks, axis=axis)
    else:
        split_node = onnx.helper.make_node("Split", [node.input[0]], chunks, axis=axis, split=sizes)
    split_node.name = node.name
    split_node.metadata_props.extend(node.metadata_props)
    sequence, dropped = node.output[0], {p.output[0] for p in picks}  # output names are unique
    rebuilt: list[onnx.NodeProto] = []
    for other in graph.node:
        if other.output and other.output[0] == sequence:
            rebuilt += [split_node, *copies]
        elif not (other.op_type == "SequenceAt" and other.output[0] in dropped):
            rebuilt.append(other)
    del graph.node[:]
    graph.node.extend(rebuilt)
    return True


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name == "value_int":
                    return np.array(attr.i)
                if attr.name == "value_ints":
                    return np.array(list(attr.ints))
    return None


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Known tensor shapes: declared, else inferred."""
    graph = model.graph
    declared = [*graph.value_info, *graph.input, *graph.output]
    if not graph.value_info:
        declared = [*inferred_graph(model).value_info, *graph.input, *graph.output]
    found = {}
    for value in declared:
        tensor = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            found[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return found


def _fresh(name: str, taken: set[str]) -> str:
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate
