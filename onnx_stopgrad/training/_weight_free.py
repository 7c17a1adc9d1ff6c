"""Gradient graphs built by ONNX Runtime without reading a single weight.

ORT's ``generate_artifacts`` moves every parameter to a graph input before it builds the
gradient graph (onnxblock's ``build_gradient_graph``), so the gradient graph never depends
on the weights' values. Here the same onnxblock steps (loss block, shape inference,
``build_gradient_graph``) run on a hollow copy of the model: parameters are typed graph
inputs from the start, and no weight is serialised, copied or written.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from ..graph import copy_without
from ._count import count_gradient_nodes

__all__ = [
    "GradientGraph",
    "UndifferentiableGraphError",
    "build_gradient_graph",
    "gradient_nodes_weight_free",
    "training_input",
]


class UndifferentiableGraphError(RuntimeError):
    """ORT 1.19's gradient builder cannot differentiate these nodes of the optimized graph."""

    def __init__(self, nodes: tuple[str, ...]) -> None:
        super().__init__(f"ONNX Runtime 1.19 cannot differentiate node {nodes[0]}")
        self.nodes = nodes


@dataclass(frozen=True)
class GradientGraph:
    """ORT's gradient build of one weight-free model."""

    #: The forward graph after ORT's training optimizations (what the builder differentiates).
    optimized: onnx.ModelProto
    #: ``optimized`` with the gradient nodes added.
    training: onnx.ModelProto


def build_gradient_graph(
    work: onnx.ModelProto, requires_grad: Iterable[str], loss_name: str, custom_op_library: Any = None
) -> GradientGraph:
    """The two steps of onnxblock's ``build_gradient_graph`` (ORT's training optimizer, then
    ``GradientGraphBuilder`` from ``loss_name``) on ``work``, whose parameters are graph inputs
    (:func:`training_input`): no weight is needed, as ORT itself moves them to inputs first.

    Raises UndifferentiableGraphError, before the builder runs, for nodes it would fail on
    or abort the process for (an If on the gradient path); RuntimeError when ORT refuses.
    """
    from onnxruntime import SessionOptions
    from onnxruntime.capi._pybind_state import GradientGraphBuilder, get_optimized_model

    from ..graph import element_types, nodes_ort_cannot_differentiate

    requires = sorted(set(requires_grad))
    options = SessionOptions()
    options.log_severity_level = 3
    if custom_op_library is not None:
        options.register_custom_ops_library(str(custom_op_library))
    optimized = onnx.load_from_string(get_optimized_model(work.SerializeToString(), set(requires), options))
    blocked = nodes_ort_cannot_differentiate(optimized.graph, requires, [loss_name], element_types(optimized))
    if blocked:
        raise UndifferentiableGraphError(blocked)
    builder = GradientGraphBuilder(
        optimized.SerializeToString(), {loss_name}, set(requires), loss_name, options
    )
    builder.build()
    return GradientGraph(optimized, onnx.load_from_string(builder.get_model()))


def gradient_nodes_weight_free(
    model: onnx.ModelProto,
    source: onnx.ModelProto,
    trainable: Sequence[str],
    frozen: Sequence[str],
    loss: Any,
    loss_input_names: Sequence[str] | None,
) -> int:
    """Gradient nodes ORT's ``generate_artifacts`` would build for ``model`` (a hollow copy:
    :func:`hollow_copy`) with these parameters and this loss; ``source`` supplies the data
    of the float initializers that are no parameter (ORT keeps those as constants).

    The loss is added by onnxblock, as ``generate_artifacts`` adds it; the gradient graph is
    :func:`build_gradient_graph`'s. Raises what that raises.
    """
    from onnxruntime.training import onnxblock

    work = training_input(model, source, [*trainable, *frozen])
    loss_block = _loss_block(copy.deepcopy(loss))

    class _WithLoss(onnxblock.ForwardBlock):  # type: ignore[misc]
        """The loss on the outputs or ``loss_input_names``, as ``generate_artifacts`` adds it."""

        def build(self, *inputs_to_loss: str) -> Any:
            return loss_block(*(loss_input_names or inputs_to_loss))

    block = _WithLoss()
    with onnxblock.base(work):
        output = block(*[o.name for o in work.graph.output])
        with_loss = block.to_model_proto()
    loss_name = output[0] if isinstance(output, tuple) else output
    return count_gradient_nodes(build_gradient_graph(with_loss, trainable, loss_name).training)


def training_input(
    model: onnx.ModelProto, source: onnx.ModelProto, parameters: Sequence[str]
) -> onnx.ModelProto:
    """``model`` (hollow) with ``parameters`` as typed graph inputs, as ORT moves them, and
    the other hollow initializers filled in from ``source``."""
    params = set(parameters)
    data = {t.name: t for t in source.graph.initializer if t.name not in params}
    work = copy_without(model, "graph")
    graph = copy_without(model.graph, "initializer")
    declared = {value.name for value in graph.input}
    for tensor in model.graph.initializer:
        if tensor.name in params:
            if tensor.name not in declared:
                graph.input.append(
                    onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
                )
        else:
            graph.initializer.append(data.get(tensor.name, tensor))
    work.graph.CopyFrom(graph)
    return work


def _loss_block(loss: Any) -> Any:
    """The onnxblock block ORT's ``generate_artifacts`` uses for ``loss``."""
    from onnxruntime.training import onnxblock
    from onnxruntime.training.artifacts import LossType

    blocks = {
        LossType.MSELoss: onnxblock.loss.MSELoss,
        LossType.CrossEntropyLoss: onnxblock.loss.CrossEntropyLoss,
        LossType.BCEWithLogitsLoss: onnxblock.loss.BCEWithLogitsLoss,
        LossType.L1Loss: onnxblock.loss.L1Loss,
    }
    if loss is None:
        return onnxblock.blocks.PassThrough()
    if isinstance(loss, LossType):
        return blocks[loss]()
    return loss
