"""HardSigmoid and HardSwish in ops ONNX Runtime 1.19 can differentiate.

ORT 1.19 has no gradient builder for either (MobileNetV3 uses both), but it has one for
Clip, Mul and Add: ``HardSigmoid(x) = Clip(alpha * x + beta, 0, 1)`` and
``HardSwish(x) = x * HardSigmoid(x)`` with alpha 1/6, beta 0.5 (the ONNX definitions).
The last node of each replacement carries the original node (in its doc_string), so
:func:`restore_hard_activations` puts it back into the eval model.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph import element_types

__all__ = ["decompose_hard_activations", "restore_hard_activations"]

_OPS = ("HardSigmoid", "HardSwish")
_MARK = "onnx_stopgrad.decomposed:"  # doc_string prefix: JSON {"prefix", "node" (base64)}


def decompose_hard_activations(model: onnx.ModelProto) -> list[str]:
    """Rewrite every main-graph HardSigmoid/HardSwish in place; one report line per op type."""
    graph = model.graph
    if not any(_is_hard(n) for n in graph.node):
        return []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    types = element_types(model)
    counts: dict[str, int] = {}
    rewritten: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if not _is_hard(node):
            rewritten.append(node)
            continue
        dtype = helper.tensor_dtype_to_np_dtype(types.get(node.input[0], onnx.TensorProto.FLOAT))
        rewritten.extend(_decompose(node, f"{node.name or node.op_type}#{index}", dtype, opset))
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    del graph.node[:]
    graph.node.extend(rewritten)
    return [
        f"{n} {op} node(s) -> Mul/Add/Clip (ONNX Runtime 1.19 has no {op} gradient)"
        for op, n in counts.items()
    ]


def _is_hard(node: onnx.NodeProto) -> bool:
    return node.op_type in _OPS and node.domain in ("", "ai.onnx")


def _decompose(node: onnx.NodeProto, label: str, dtype: np.dtype, opset: int) -> list[onnx.NodeProto]:
    attrs = {a.name: a.f for a in node.attribute}
    alpha = attrs.get("alpha", 0.2) if node.op_type == "HardSigmoid" else 1.0 / 6.0
    beta = attrs.get("beta", 0.5)
    prefix = f"{label}/decomposed"
    x = node.input[0]
    nodes: list[onnx.NodeProto] = []

    def const(value: float, name: str) -> str:
        out = f"{prefix}/{name}"
        nodes.append(
            helper.make_node(
                "Constant", [], [out], name=out, value=numpy_helper.from_array(np.array(value, dtype))
            )
        )
        return out

    def op(op_type: str, inputs: list[str], output: str | None = None, **kw: Any) -> str:
        out = output or f"{prefix}/{op_type}_{len(nodes)}"
        nodes.append(helper.make_node(op_type, inputs, [out], name=f"{prefix}/{op_type}_{len(nodes)}", **kw))
        return out

    hard_sigmoid_out = node.output[0] if node.op_type == "HardSigmoid" else None
    linear = op("Add", [op("Mul", [x, const(alpha, "alpha")]), const(beta, "beta")])
    if opset >= 11:
        gate = op("Clip", [linear, const(0.0, "zero"), const(1.0, "one")], hard_sigmoid_out)
    else:
        gate = op("Clip", [linear], hard_sigmoid_out, min=0.0, max=1.0)
    if node.op_type == "HardSwish":
        op("Mul", [x, gate], node.output[0])
    original = base64.b64encode(node.SerializeToString()).decode()
    nodes[-1].doc_string = _MARK + json.dumps({"prefix": f"{prefix}/", "node": original})
    return nodes


def restore_hard_activations(model: onnx.ModelProto) -> int:
    """Put back the nodes :func:`decompose_hard_activations` replaced; returns how many."""
    graph = model.graph
    originals: dict[str, onnx.NodeProto] = {}  # prefix -> node
    for node in graph.node:
        if node.doc_string.startswith(_MARK):
            record = json.loads(node.doc_string[len(_MARK) :])
            original = onnx.NodeProto()
            original.ParseFromString(base64.b64decode(record["node"]))
            originals[record["prefix"]] = original
    if not originals:
        return 0
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        prefix = next((p for p in originals if node.name.startswith(p)), None)
        if prefix is None:
            kept.append(node)
        elif node.doc_string.startswith(_MARK):  # the last node: the original goes here
            kept.append(originals[prefix])
    del graph.node[:]
    graph.node.extend(kept)
    return len(originals)
