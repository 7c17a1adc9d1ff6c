"""The built-in losses, checked against the model's outputs before ONNX Runtime builds anything.

ORT's ``CrossEntropyLoss`` block makes labels by dropping the *last* axis of the logits but
hands both to ``SoftmaxCrossEntropyLoss``, which wants the class axis at position 1: LM and
token-classifier logits ``(B, T, V)`` pass the build and fail at the first step. The
crossentropy loss here moves the class axis to position 1 first and ignores label ``-100``,
as ``torch.nn.functional.cross_entropy`` and Hugging Face do.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from ..errors import TrainingError
from ..graph import inferred_graph
from ._choices import LOSSES, loss_type

__all__ = [
    "IGNORE_INDEX",
    "LossInput",
    "check_label_values",
    "check_loss_inputs",
    "label_classes",
    "loss_inputs",
    "prepare_loss",
]

log = logging.getLogger(__name__)

#: Label value the crossentropy loss skips (PyTorch's and Hugging Face's default).
IGNORE_INDEX = -100

_FLOATS = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}
_LABEL_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
#: The name ORT's blocks give the second loss input when the model has none.
_SECOND_INPUT = {"crossentropy": "labels", "mse": "target", "l1": "target", "bce": "target"}

Dim = int | str | None


@dataclass(frozen=True)
class LossInput:
    """A tensor the loss reads: its element type and shape (None when unknown)."""

    name: str
    elem_type: int
    shape: tuple[Dim, ...] | None

    def describe(self) -> str:
        dtype = onnx.helper.tensor_dtype_to_string(self.elem_type) if self.elem_type else "unknown type"
        dtype = dtype.removeprefix("TensorProto.").lower()
        if self.shape is None:
            return f"{self.name} ({dtype}, unknown shape)"
        return f"{self.name} ({dtype}, shape {_shape_text(self.shape)})"


def prepare_loss(loss: Any, model: onnx.ModelProto, loss_input_names: Sequence[str] | None) -> Any:
    """The loss to hand to ORT's ``generate_artifacts`` for ``model``, checked to fit it.

    Names (``"crossentropy"``) and ORT's ``LossType`` enums are checked against what the
    model feeds the loss. ``"crossentropy"`` becomes the sequence-aware block (class axis
    last, labels -100 skipped); ORT's ``LossType.CrossEntropyLoss`` does too where ORT's own
    loss would fail at the first step (logits of rank 3 or more), and stays ORT's on (N, C).
    onnxblock blocks and None pass through unchecked. Raises TrainingError on a mismatch.
    """
    name = _loss_name(loss)
    if name is None:
        return loss_type(loss)
    inputs = loss_inputs(model, loss_input_names)
    check_loss_inputs(name, inputs)
    if len(inputs) == 2 and not loss_input_names:
        log.warning(
            "the %s loss reads the model's second output, %s, as its %s (ONNX Runtime passes every "
            "output to the loss); pass loss_input_names (CLI: --loss-input NAME) to choose",
            name,
            inputs[1].name,
            _SECOND_INPUT[name],
        )
    if name == "crossentropy":
        rank = len(inputs[0].shape or ())
        if not isinstance(loss, str) and rank == 2:
            return loss  # ORT's own enum on (N, C) logits: ORT's loss as it is (drop-in parity)
        return _cross_entropy_block()(rank=rank)
    return loss_type(name)


def _loss_name(loss: Any) -> str | None:
    """The CLI name of a built-in loss (a name or ORT's enum), None for blocks and None."""
    if isinstance(loss, str):
        loss_type(loss)  # unknown names: one line listing the choices
        return loss.lower()
    member = getattr(loss, "name", None)
    if type(loss).__name__ == "LossType" and member in LOSSES.values():
        return next(key for key, value in LOSSES.items() if value == member)
    return None


def loss_inputs(model: onnx.ModelProto, loss_input_names: Sequence[str] | None) -> list[LossInput]:
    """What ORT passes to the loss: ``loss_input_names``, else every graph output, in order."""
    outputs = [o.name for o in model.graph.output]
    names = list(loss_input_names or outputs)
    if names and names[0] not in outputs:
        raise TrainingError(
            f"the loss reads model outputs, and {names[0]!r} is not one; "
            f"choose one of: {', '.join(outputs) or 'none'}"
        )
    known = _declared_types(model.graph)
    if any(name not in known for name in names):
        known = {**_declared_types(inferred_graph(model)), **known}
    return [known.get(name, LossInput(name, 0, None)) for name in names]


def check_loss_inputs(loss: str, inputs: Sequence[LossInput]) -> None:
    """Refuse, as one line, a model whose outputs the built-in ``loss`` cannot read."""
    if not inputs:
        raise TrainingError(f"the model has no output for the {loss} loss to read")
    second = _SECOND_INPUT[loss]
    if len(inputs) > 2:
        raise TrainingError(
            f"the {loss} loss reads one output (and optionally its {second}), but gets "
            f"{len(inputs)}: {', '.join(i.name for i in inputs)}; "
            "choose the output with loss_input_names (CLI: --loss-input NAME)"
        )
    prediction = inputs[0]
    if prediction.elem_type and prediction.elem_type not in _FLOATS:
        raise TrainingError(
            f"the {loss} loss needs a float prediction, but {prediction.describe()} is not; "
            "choose the output with loss_input_names (CLI: --loss-input NAME)"
        )
    if loss == "crossentropy":
        _check_logits(prediction)
    if len(inputs) == 2:
        _check_second(loss, prediction, inputs[1])


def _check_logits(logits: LossInput) -> None:
    if logits.shape is None:
        raise TrainingError(
            f"crossentropy: the rank of {logits.name} is unknown, so the class axis cannot be found; "
            "export the model with output shapes (run onnx.shape_inference on it)"
        )
    if len(logits.shape) < 2:
        raise TrainingError(
            f"crossentropy needs logits with a batch and a class axis, (N, C) or (B, T, C), "
            f"but {logits.describe()} has rank {len(logits.shape)}; use mse or bce for it"
        )


def _check_second(loss: str, prediction: LossInput, given: LossInput) -> None:
    """The model's own labels/target (ORT reads the second loss input as them)."""
    role = _SECOND_INPUT[loss]
    hint = "pass loss_input_names with only the output to train on (CLI: --loss-input NAME)"
    if loss == "crossentropy":
        if given.elem_type and given.elem_type not in _LABEL_TYPES:
            raise TrainingError(f"crossentropy reads {given.describe()} as its integer labels; {hint}")
        expected = None if prediction.shape is None else prediction.shape[:-1]
    else:
        if given.elem_type and prediction.elem_type and given.elem_type != prediction.elem_type:
            raise TrainingError(
                f"the {loss} loss reads {given.describe()} as the {role} of {prediction.describe()}; "
                f"their types differ; {hint}"
            )
        expected = prediction.shape
    if expected is not None and given.shape is not None and not _same_shape(expected, given.shape):
        raise TrainingError(
            f"the {loss} loss reads {given.describe()} as the {role} of {prediction.describe()}, "
            f"which needs shape {_shape_text(expected)}; {hint}"
        )


def label_classes(model: onnx.ModelProto) -> dict[str, int]:
    """The class count each ``SoftmaxCrossEntropyLoss`` labels input of ``model`` (a training
    or eval model) indexes, where the logits' class axis has a known size."""
    losses = [n for n in model.graph.node if n.op_type == "SoftmaxCrossEntropyLoss" and len(n.input) > 1]
    if not losses:
        return {}
    known = _declared_types(inferred_graph(model))
    found = {}
    for node in losses:
        logits = known.get(node.input[0])
        if logits is not None and logits.shape is not None and len(logits.shape) > 1:
            classes = logits.shape[1]  # the loss's class axis (the block moved it there)
            if isinstance(classes, int) and classes > 0:
                found[node.input[1]] = classes
    return found


def check_label_values(arrays: dict[str, Any], classes: dict[str, int]) -> None:
    """Refuse labels outside ``[0, classes)`` that are not -100: ORT's CPU kernel does not
    check them and returns a meaningless loss."""
    for name, count in classes.items():
        labels = arrays.get(name)
        if labels is None:
            continue
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= count))
        if bad.any():
            raise TrainingError(
                f"{name}: {int(bad.sum())} value(s) outside [0, {count}) and not {IGNORE_INDEX} "
                f"(e.g. {labels[bad].flat[0]}); "
                f"labels are class indices, or {IGNORE_INDEX} to skip a position"
            )


def _same_shape(expected: tuple[Dim, ...], actual: tuple[Dim, ...]) -> bool:
    """Equal rank, and no two known dimensions that differ (no broadcasting)."""
    if len(expected) != len(actual):
        return False
    for a, b in zip(expected, actual, strict=True):
        if isinstance(a, int) and isinstance(b, int) and a != b:
            return False
    return True


def _shape_text(shape: tuple[Dim, ...]) -> str:
    return (
        "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    )


def _declared_types(graph: onnx.GraphProto) -> dict[str, LossInput]:
    found: dict[str, LossInput] = {}
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        shape = None
        if tensor.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
            )
        found[value.name] = LossInput(value.name, tensor.elem_type, shape)
    for tensor in graph.initializer:
        found[tensor.name] = LossInput(tensor.name, tensor.data_type, tuple(tensor.dims))
    return found


@functools.cache
def _cross_entropy_block() -> type:
    """ORT's CrossEntropyLoss block with the class axis moved to position 1 (imported lazily:
    onnxruntime.training imports torch)."""
    from onnxruntime.training.onnxblock import _graph_utils  # type: ignore[import-untyped]
    from onnxruntime.training.onnxblock.loss import CrossEntropyLoss  # type: ignore[import-untyped]

    class SequenceCrossEntropyLoss(CrossEntropyLoss):  # type: ignore[misc]
        """Mean softmax cross-entropy over the labels that are not ``-100``.

        Logits ``(N, C)`` with labels ``(N,)``, or ``(B, T, ..., C)`` with labels
        ``(B, T, ...)``: the class axis is the last one, as Hugging Face models output it.
        """

        def __init__(self, rank: int) -> None:
            super().__init__(reduction="mean", ignore_index=IGNORE_INDEX)
            self._rank = rank

        def build(self, scores_input_name: str, labels_name: str = "labels") -> str:
            if self._rank <= 2:
                return str(super().build(scores_input_name, labels_name))
            if not _graph_utils.node_arg_exists(self.base, labels_name):
                labels = onnx.ValueInfoProto()
                labels.CopyFrom(_graph_utils.get_output_from_output_name(self.base, scores_input_name))
                labels.name = labels_name
                labels.type.tensor_type.elem_type = onnx.TensorProto.INT64
                del labels.type.tensor_type.shape.dim[-1]
                self.base.graph.input.append(labels)
            class_first = _graph_utils.generate_graph_name("celoss.class_axis_first")
            loss = _graph_utils.generate_graph_name("loss")
            self.base.graph.node.extend(
                [
                    onnx.helper.make_node(
                        "Transpose",
                        [scores_input_name],
                        [class_first],
                        name=_graph_utils.generate_graph_name("Transpose"),
                        perm=[0, self._rank - 1, *range(1, self._rank - 1)],
                    ),
                    onnx.helper.make_node(
                        "SoftmaxCrossEntropyLoss",
                        [class_first, labels_name],
                        [loss, _graph_utils.generate_graph_name("log_prob")],
                        name=_graph_utils.generate_graph_name("SoftmaxCrossEntropyLoss"),
                        reduction="mean",
                        ignore_index=IGNORE_INDEX,
                    ),
                ]
            )
            return loss

    return SequenceCrossEntropyLoss
