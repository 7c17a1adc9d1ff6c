"""Which BatchNormalization and Dropout nodes run in training mode while the model trains.

A node is in the *trainable region* when a gradient can pass through it to a trainable
parameter: it is forward-reachable from one on a differentiable path, and its output
reaches the loss without crossing a StopGradient (ONNX Runtime's own rule for building a
gradient node). Every other node is *frozen*: BatchNormalization uses its running
statistics and Dropout is the identity there, whatever the export says. In the trainable
region a node runs in the mode it was exported in, unless an override says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from ..errors import TrainingError
from ..graph import differentiable_inputs, element_types, gradient_reach, node_label, node_reads

__all__ = [
    "BATCHNORM_MODES",
    "DROPOUT_MODES",
    "NodeMode",
    "exported_mode",
    "mode_dict",
    "mode_lines",
    "plan_modes",
    "running_statistics",
]

#: ``batchnorm=`` choices: keep the export's mode, or force one on the trainable region.
BATCHNORM_MODES = ("as-exported", "train", "eval")
#: ``dropout=`` choices: keep the export's mode, or switch Dropout on/off in the trainable region.
DROPOUT_MODES = ("as-exported", "on", "off")

_OPS = ("BatchNormalization", "Dropout")


@dataclass(frozen=True)
class NodeMode:
    """The mode one BatchNormalization/Dropout node runs in during training."""

    node: str  #: node name, or ``op_type#index``
    op_type: str
    index: int  #: position in ``graph.node``
    exported: str  #: "train" or "eval": what the model says
    mode: str  #: "train" or "eval": what the training model does
    region: str  #: "trainable" or "frozen"

    def line(self) -> str:
        """One line for reports: ``BatchNormalization bn1: eval (frozen; exported eval)``."""
        return f"{self.op_type} {self.node}: {self.mode} ({self.region}; exported {self.exported})"


def plan_modes(
    model: onnx.ModelProto,
    trainable: Iterable[str],
    targets: Sequence[str],
    batchnorm: str = "as-exported",
    dropout: str = "as-exported",
) -> list[NodeMode]:
    """The mode of every BatchNormalization/Dropout node of the main graph, in graph order."""
    _check_choice(batchnorm, BATCHNORM_MODES, "batchnorm")
    _check_choice(dropout, DROPOUT_MODES, "dropout")
    graph = model.graph
    if not any(_is_mode_op(n) for n in graph.node):
        return []
    types = element_types(model)
    reached = _forward_reach(graph, set(trainable), types)
    to_loss = gradient_reach(model, targets, types)
    opset = _opset(model)
    constants = _constant_values(graph)
    modes = []
    for index, node in enumerate(graph.node):
        if not _is_mode_op(node):
            continue
        exported = exported_mode(node, opset, constants)
        inputs = node.input[:3] if node.op_type == "BatchNormalization" else node.input[:1]
        in_region = any(i in reached for i in inputs if i) and node.output[0] in to_loss
        if not in_region:
            mode, region = "eval", "frozen"
        else:
            override = batchnorm if node.op_type == "BatchNormalization" else dropout
            mode, region = _resolve(override, exported), "trainable"
        modes.append(NodeMode(node_label(node, index), node.op_type, index, exported, mode, region))
    return modes


def running_statistics(model: onnx.ModelProto) -> list[str]:
    """Names of the running mean/variance initializers BatchNormalization nodes read."""
    initializers = {t.name for t in model.graph.initializer}
    names = [
        name
        for node in model.graph.node
        if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")
        for name in node.input[3:5]
        if name in initializers
    ]
    return list(dict.fromkeys(names))


def exported_mode(node: onnx.NodeProto, opset: int, constants: dict[str, bool]) -> str:
    """ "train" or "eval", as the exported node says.

    BatchNormalization: the ``training_mode`` attribute (opset 14+), or before opset 14 the
    optional running-statistics outputs. Dropout: its ``training_mode`` input (absent or
    false: eval; a value only known at run time counts as train).
    """
    if node.op_type == "BatchNormalization":
        attr = next((a for a in node.attribute if a.name == "training_mode"), None)
        if attr is not None:
            return "train" if attr.i else "eval"
        if opset < 14 and len([o for o in node.output[1:] if o]) >= 2:
            return "train"
        return "eval"
    flag = node.input[2] if len(node.input) > 2 else ""
    if not flag:
        return "eval"
    return "train" if constants.get(flag, True) else "eval"


def _resolve(override: str, exported: str) -> str:
    if override == "as-exported":
        return exported
    return "train" if override in ("train", "on") else "eval"


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise TrainingError(f"unknown {what} mode {value!r}; choose one of {', '.join(choices)}")


def _is_mode_op(node: onnx.NodeProto) -> bool:
    return node.op_type in _OPS and node.domain in ("", "ai.onnx")


def _forward_reach(graph: onnx.GraphProto, sources: set[str], types: Mapping[str, int]) -> set[str]:
    """Tensors a gradient could flow back from to ``sources``: one walk in graph order."""
    reached = set(sources)
    for node in graph.node:
        explicit = differentiable_inputs(node, types)
        implicit = [name for name in node_reads(node) if name not in node.input]
        if any(name in reached for name in (*explicit, *implicit)):
            reached.update(o for o in node.output if o)
    return reached


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _constant_values(graph: onnx.GraphProto) -> dict[str, bool]:
    """Truth of the one-element constants (initializers and Constant nodes) of the graph."""
    tensors = list(graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant":
            tensors.extend(
                _named(a.t, node.output[0]) for a in node.attribute if a.name == "value" and a.t.dims == []
            )
    values = {}
    for tensor in tensors:
        array = numpy_helper.to_array(tensor)
        if array.size == 1:
            values[tensor.name] = bool(array.reshape(()))
    return values


def _named(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    named = onnx.TensorProto()
    named.CopyFrom(tensor)
    named.name = name
    return named


def mode_dict(mode: NodeMode) -> dict[str, object]:
    """``mode`` as JSON-ready fields (the CLI's ``--json`` output)."""
    return {"node": mode.node, "op_type": mode.op_type, "exported": mode.exported, "mode": mode.mode,
            "region": mode.region}  # fmt: skip


def mode_lines(modes: Sequence[NodeMode], names: Callable[[tuple[str, ...]], str]) -> list[str]:
    """One line per op type, mode and region, e.g. ``BatchNormalization eval, frozen (6): ...``;
    ``names`` shortens a list of node names."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for mode in modes:
        groups.setdefault((mode.op_type, mode.mode, mode.region), []).append(mode.node)
    return [
        f"{op_type} {mode}, {region} ({len(nodes)}): {names(tuple(nodes))}"
        for (op_type, mode, region), nodes in groups.items()
    ]
