"""Make the training graph run each BatchNormalization/Dropout in its planned mode.

ONNX Runtime 1.19 turns every ``BatchNormalization`` into ``com.microsoft::BatchNormInternal``
in training mode, whatever the model says (its ``BatchNormReplacement`` rule, run on the
whole graph before the gradient graph is built), and that kernel updates the running
statistics it reads in place, with the biased batch variance. So, before the build:

* eval: the node is written as the plain ops it computes,
  ``(x - mean) * (scale / sqrt(var + eps)) + B``, which ORT differentiates as they are;
* train: the node stays (ORT's kernel and exact gradient) but reads copies of its running
  statistics; beside it, plain ops compute the updates PyTorch makes
  (``momentum * running + (1 - momentum) * batch``, the batch variance made unbiased),
  extra outputs of the training model that :mod:`._running` copies into the checkpoint.

Dropout in eval mode becomes an Identity; in train mode its ``training_mode`` input is a
constant true. The eval model gets the original nodes back in inference mode, as ONNX
Runtime writes them (BatchNormalization with one output, Dropout without
``training_mode``), so the exported model is the source model with new weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import TrainingError
from ..graph import inferred_graph
from ._modes import NodeMode
from ._surgery import _keep, toposort

__all__ = ["RUNNING_STATS_METADATA_KEY", "ModeRewrite", "apply_modes"]

#: Training-model metadata: JSON ``{training-model output: running-statistic parameter}``.
RUNNING_STATS_METADATA_KEY = "onnx_stopgrad.running_statistics"
_PREFIX = "onnx_stopgrad.mode"  # names of the nodes this module adds


@dataclass
class ModeRewrite:
    """What :func:`apply_modes` changed, to finish the models ORT builds from it."""

    #: Training-model outputs holding updated running statistics -> the parameter they update.
    updates: dict[str, str] = field(default_factory=dict)
    #: Original BatchNormalization/Dropout nodes and the names of the nodes that replaced each.
    originals: list[tuple[onnx.NodeProto, set[str]]] = field(default_factory=list)
    #: Shapes and types of the original nodes' outputs, for the eval model's value_info.
    output_infos: dict[str, onnx.ValueInfoProto] = field(default_factory=dict)
    #: Running statistics of training-mode nodes that are no initializer (so cannot update).
    fixed_statistics: list[str] = field(default_factory=list)

    def finish_training(self, model: onnx.ModelProto) -> None:
        """Record which outputs update which running statistic (for :mod:`._running`)."""
        _keep(model.metadata_props, lambda p: p.key != RUNNING_STATS_METADATA_KEY)
        if self.updates:
            model.metadata_props.add(key=RUNNING_STATS_METADATA_KEY, value=json.dumps(self.updates))

    def finish_eval(self, model: onnx.ModelProto) -> None:
        """Put each original node back in inference mode; drop the statistics outputs."""
        graph = model.graph
        replaced = set().union(*(names for _, names in self.originals)) if self.originals else set()
        _keep(graph.node, lambda n: n.name not in replaced)
        _keep(graph.output, lambda o: o.name not in self.updates)
        for original, _ in self.originals:
            graph.node.append(_inference_node(original))
        toposort(graph)
        self._describe_restored_outputs(graph)

    def _describe_restored_outputs(self, graph: onnx.GraphProto) -> None:
        """Give the restored nodes' outputs the value_info ORT's eval model would have, in
        its order (that of the nodes producing them)."""
        described = {v.name for v in graph.value_info} | {o.name for o in graph.output}
        missing = [
            self.output_infos[name]
            for original, _ in self.originals
            for name in original.output
            if name and name not in described and name in self.output_infos
        ]
        if not missing:
            return
        producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
        infos = sorted([*graph.value_info, *missing], key=lambda v: producer.get(v.name, len(producer)))
        del graph.value_info[:]
        graph.value_info.extend(infos)


def apply_modes(model: onnx.ModelProto, modes: list[NodeMode]) -> ModeRewrite:
    """Rewrite the planned nodes of ``model`` in place (see the module docstring)."""
    rewrite = ModeRewrite()
    if not modes:
        return rewrite
    graph = model.graph
    ranks, types, infos = _shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    initializers = {t.name for t in graph.initializer}
    consumed = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    taken = {name for node in graph.node for name in node.output} | initializers
    taken.update(i.name for i in graph.input)
    new_nodes: dict[int, list[onnx.NodeProto]] = {}
    for mode in modes:
        node = graph.node[mode.index]
        builder = _Builder(f"{_PREFIX}/{mode.node.lstrip('/')}", taken)
        rewrite.output_infos.update((name, infos[name]) for name in node.output if name in infos)
        if mode.op_type == "Dropout":
            new_nodes[mode.index] = _dropout(node, mode.mode, builder, consumed)
            rewrite.originals.append((copy.deepcopy(node), {n.name for n in new_nodes[mode.index]}))
            continue
        x = node.input[0]
        if x not in ranks or ranks[x] < 2:
            raise TrainingError(
                f"cannot tell the rank of {x!r}, the input of BatchNormalization {mode.node!r}; "
                "export the model with static ranks or run onnx.shape_inference on it"
            )
        elem = types.get(x) or types.get(node.input[1]) or onnx.TensorProto.FLOAT
        batchnorm = _BatchNorm(node, mode, ranks[x], helper.tensor_dtype_to_np_dtype(elem), opset, builder)
        nodes = batchnorm.train(consumed) if mode.mode == "train" else batchnorm.eval(consumed)
        if mode.mode == "train":
            for param, output in batchnorm.updates.items():
                if param in initializers:
                    rewrite.updates[output] = param
                else:
                    rewrite.fixed_statistics.append(param)
        rewrite.originals.append((copy.deepcopy(node), {n.name for n in nodes}))
        new_nodes[mode.index] = nodes
    kept = []
    for index, node in enumerate(graph.node):
        kept.extend(new_nodes.get(index, [node]))
    del graph.node[:]
    graph.node.extend(kept)
    return rewrite


class _Builder:
    """Adds uniquely named nodes and Constant nodes for one replaced node."""

    def __init__(self, prefix: str, taken: set[str]) -> None:
        self.prefix, self.taken = prefix, taken
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def name(self, hint: str, prefixed: bool = True) -> str:
        """A new tensor name: ``<prefix>/<hint>`` (or ``hint`` alone), made unique."""
        base = f"{self.prefix}/{hint}" if prefixed else hint
        candidate, index = base, 1
        while candidate in self.taken:
            candidate, index = f"{base}_{index}", index + 1
        self.taken.add(candidate)
        return candidate

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self.name(op_type.lower())
        self._count += 1
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=f"{self.prefix}/{op_type}_{self._count}", **attrs)
        )
        return out

    def const(self, value: np.ndarray, hint: str) -> str:
        return self.op("Constant", [], self.name(hint), value=numpy_helper.from_array(value))


def _dropout(node: onnx.NodeProto, mode: str, b: _Builder, consumed: set[str]) -> list[onnx.NodeProto]:
    mask = node.output[1] if len(node.output) > 1 and node.output[1] in consumed else ""
    if mode == "train":
        kept = copy.deepcopy(node)
        kept.name = kept.name or b.name("Dropout")  # the eval model finds it by name
        inputs = list(kept.input) + [""] * (3 - len(kept.input))
        inputs[2] = b.const(np.array(True), "training_mode")
        kept.input[:] = inputs
        return [*b.nodes, kept]
    b.op("Identity", [node.input[0]], node.output[0])
    if mask:  # eval-mode Dropout keeps every element
        shape = b.op("Shape", [node.input[0]])
        b.op("ConstantOfShape", [shape], mask, value=numpy_helper.from_array(np.array([True])))
    return b.nodes


class _BatchNorm:
    """One BatchNormalization written in plain ONNX ops."""

    def __init__(
        self, node: onnx.NodeProto, mode: NodeMode, rank: int, dtype: np.dtype, opset: int, builder: _Builder
    ) -> None:
        self.node, self.mode, self.rank, self.opset = node, mode, rank, opset
        self.dtype, self.b = dtype, builder
        attrs = {a.name: a for a in node.attribute}
        self.epsilon = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
        self.momentum = attrs["momentum"].f if "momentum" in attrs else 0.9
        self.updates: dict[str, str] = {}

    def _scalar(self, value: float, hint: str) -> str:
        return self.b.const(np.array(value, dtype=self.dtype), hint)

    def _per_channel(self, name: str) -> str:
        """``name`` (shape [C]) reshaped to [C, 1, ...] so it broadcasts over x."""
        shape = self.b.const(np.array([-1] + [1] * (self.rank - 2), dtype=np.int64), "channel_shape")
        return self.b.op("Reshape", [name, shape])

    def _refuse_extra_outputs(self, consumed: set[str]) -> None:
        """The optional outputs of a training-mode export are for the exporter, not the graph."""
        used = [o for o in self.node.output[1:] if o and o in consumed]
        if used:
            raise TrainingError(
                f"the graph reads {used[0]!r}, a running-statistics output of BatchNormalization "
                f"{self.mode.node!r}; onnx-stopgrad cannot train such a graph: "
                "re-export it without that reader"
            )

    def eval(self, consumed: set[str]) -> list[onnx.NodeProto]:
        self._refuse_extra_outputs(consumed)
        x, scale, bias, mean, var = self.node.input[:5]
        b = self.b
        inv_std = b.op(
            "Reciprocal", [b.op("Sqrt", [b.op("Add", [var, self._scalar(self.epsilon, "epsilon")])])]
        )
        factor = b.op("Mul", [scale, inv_std])
        centred = b.op("Sub", [x, self._per_channel(mean)])
        scaled = b.op("Mul", [centred, self._per_channel(factor)])
        b.op("Add", [scaled, self._per_channel(bias)], self.node.output[0])
        return b.nodes

    def _reduce_mean(self, x: str) -> str:
        axes = [0, *range(2, self.rank)]
        if self.opset >= 18:
            return self.b.op(
                "ReduceMean", [x, self.b.const(np.array(axes, dtype=np.int64), "axes")], keepdims=1
            )
        return self.b.op("ReduceMean", [x], axes=axes, keepdims=1)

    def train(self, consumed: set[str]) -> list[onnx.NodeProto]:
        """The node itself as a one-output node without ``training_mode`` (what ONNX shape
        inference accepts, and ORT's BatchNormReplacement turns into a training-mode
        BatchNormInternal), reading copies of the running statistics; the updates beside it."""
        self._refuse_extra_outputs(consumed)
        x, mean, var = self.node.input[0], self.node.input[3], self.node.input[4]
        b = self.b
        zero = self._scalar(0.0, "zero")
        node = copy.deepcopy(self.node)
        node.input[3:5] = [b.op("Add", [mean, zero]), b.op("Add", [var, zero])]
        del node.output[1:]
        _keep(node.attribute, lambda a: a.name != "training_mode")
        batch_mean = self._reduce_mean(x)
        centred = b.op("Sub", [x, batch_mean])
        batch_var = self._reduce_mean(b.op("Mul", [centred, centred]))
        self._running_updates(x, mean, var, batch_mean, batch_var)
        return [*b.nodes, node]

    def _running_updates(self, x: str, mean: str, var: str, batch_mean: str, batch_var: str) -> None:
        b = self.b
        flat = b.const(np.array([-1], dtype=np.int64), "flat")
        # Unbiased batch variance, as PyTorch keeps: var * n / (n - 1), n = size(x) / C.
        count = b.op("Div", [b.op("Cast", [b.op("Size", [x])], to=onnx.TensorProto.DOUBLE),
                             b.op("Cast", [b.op("Size", [mean])], to=onnx.TensorProto.DOUBLE)])  # fmt: skip
        correction = b.op("Div", [count, b.op("Sub", [count, b.const(np.array(1.0), "one")])])
        correction = b.op("Cast", [correction], to=helper.np_dtype_to_tensor_dtype(self.dtype))
        unbiased = b.op("Mul", [b.op("Reshape", [batch_var, flat]), correction])
        keep, take = (
            self._scalar(self.momentum, "momentum"),
            self._scalar(1.0 - self.momentum, "one_minus_momentum"),
        )
        for param, batch in ((mean, b.op("Reshape", [batch_mean, flat])), (var, unbiased)):
            name = b.name(f"{param}.updated", prefixed=False)
            b.op("Add", [b.op("Mul", [param, keep]), b.op("Mul", [batch, take])], name)
            self.updates[param] = name


def _inference_node(node: onnx.NodeProto) -> onnx.NodeProto:
    """``node`` in inference mode as ONNX Runtime's eval models have it: a BatchNormalization
    with one output and no training_mode, a Dropout with an empty training_mode input."""
    inference = copy.deepcopy(node)
    if node.op_type == "Dropout":
        if len(inference.input) > 2:
            inference.input[2] = ""
        return inference
    _keep(inference.attribute, lambda a: a.name != "training_mode")
    del inference.output[1:]
    return inference


def _shapes(
    model: onnx.ModelProto,
) -> tuple[dict[str, int], dict[str, int], dict[str, onnx.ValueInfoProto]]:
    """Ranks, element types and value infos of the model's tensors, by shape inference."""
    graph = inferred_graph(model)  # weights are typed inputs there
    values = [*graph.value_info, *graph.input, *graph.output]
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")
    }
    types = {v.name: v.type.tensor_type.elem_type for v in values if v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in graph.initializer})
    return ranks, types, {v.name: copy.deepcopy(v) for v in graph.value_info}
