"""Adjustments that make real exports acceptable to ONNX Runtime 1.19's training tools.

Each fix-up edits the model in place and returns one line per change, which
:func:`~onnx_stopgrad.training.generate_artifacts` reports to the user.
"""

from __future__ import annotations

import logging

import onnx

from .._ort119 import MAX_IR_VERSION, cap_ir_version
from ..errors import TrainingError
from ..graph import element_types
from ._activations import decompose_hard_activations
from ._split_fixup import split_sequences

__all__ = ["MAX_IR_VERSION", "MAX_OPSET", "apply_fixups", "cap_ir_version"]

log = logging.getLogger(__name__)

#: Highest ai.onnx opset ONNX Runtime 1.19 implements.
MAX_OPSET = 21

# op_type -> number of outputs ORT 1.19's gradient builder reads (it indexes them).
_OUTPUTS_FOR_GRADIENT = {
    "LayerNormalization": (3, ("mean", "inv_std_dev")),
    "Dropout": (2, ("mask",)),
}


def apply_fixups(model: onnx.ModelProto) -> list[str]:
    """Fix what would stop ORT 1.19 from building or loading the training graph."""
    changes: list[str] = []
    old_ir = cap_ir_version(model)
    if old_ir is not None:
        changes.append(f"IR version {old_ir} -> {MAX_IR_VERSION} (ONNX Runtime 1.19 loads <= 10)")
    changes.extend(_downgrade_opset(model))
    changes.extend(_add_gradient_outputs(model.graph))
    changes.extend(_cast_like_to_cast(model))
    changes.extend(decompose_hard_activations(model))
    changes.extend(split_sequences(model))
    for change in changes:
        log.info("adjusted: %s", change)
    return changes


def _downgrade_opset(model: onnx.ModelProto) -> list[str]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset <= MAX_OPSET:
        return []
    from onnx import version_converter

    ir_version = model.ir_version
    try:
        converted = version_converter.convert_version(model, MAX_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors and others
        raise TrainingError(
            f"the model uses opset {opset}, above the {MAX_OPSET} ONNX Runtime 1.19 supports, and "
            f"converting it failed ({str(exc).splitlines()[0]}); export with opset_version={MAX_OPSET}"
        ) from exc
    model.CopyFrom(converted)
    model.ir_version = min(ir_version, MAX_IR_VERSION)
    return [f"opset {opset} -> {MAX_OPSET} (ONNX Runtime 1.19 implements <= {MAX_OPSET})"]


def _add_gradient_outputs(graph: onnx.GraphProto) -> list[str]:
    """Give nodes the optional outputs ORT's gradient builders read (exporters drop them)."""
    taken = {name for node in graph.node for name in node.output}
    taken.update(i.name for i in graph.input)
    taken.update(t.name for t in graph.initializer)
    fixed: dict[str, int] = {}
    for node in graph.node:
        wanted = _OUTPUTS_FOR_GRADIENT.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or wanted is None:
            continue
        count, suffixes = wanted
        if len(node.output) >= count and all(node.output[:count]):
            continue
        base = node.output[0] or node.name or node.op_type
        while len(node.output) < count:
            node.output.append("")
        for index in range(1, count):
            if not node.output[index]:
                name = _unique(f"{base}.{suffixes[index - 1]}", taken)
                taken.add(name)
                node.output[index] = name
        fixed[node.op_type] = fixed.get(node.op_type, 0) + 1
    return [
        f"{n} {op} node(s): added the unused outputs ORT's gradient builder reads" for op, n in fixed.items()
    ]


def _cast_like_to_cast(model: onnx.ModelProto) -> list[str]:
    """CastLike has no gradient builder in ORT 1.19; Cast to the known type is the same op."""
    nodes = [n for n in model.graph.node if n.op_type == "CastLike" and n.domain in ("", "ai.onnx")]
    if not nodes:
        return []
    types = element_types(model)
    changed = 0
    for node in nodes:
        to = types.get(node.input[1])
        if not to:
            continue
        kept = [a for a in node.attribute if a.name == "saturate"]
        del node.attribute[:]
        node.attribute.extend([onnx.helper.make_attribute("to", to), *kept])
        node.op_type = "Cast"
        del node.input[1:]
        changed += 1
    if changed < len(nodes):
        log.warning("%d CastLike node(s) kept: the type to cast to is unknown", len(nodes) - changed)
    return [f"{changed} CastLike node(s) -> Cast (ORT 1.19 has no CastLike gradient)"] if changed else []


def _unique(name: str, taken: set[str]) -> str:
    candidate, index = name, 1
    while candidate in taken:
        candidate = f"{name}_{index}"
        index += 1
    return candidate
