"""The ONNX schema of StopGradient, registered with ``onnx.defs`` on package import.

With it, ``onnx.checker.check_model(m, full_check=True, check_custom_domain=True)`` accepts
models that use the op, and ``onnx.shape_inference.infer_shapes`` carries the input's
element type and shape (symbolic dims included) to the output.
"""

from __future__ import annotations

import threading

import onnx
import onnx.defs

from ._names import DOMAIN, OP_TYPE, OPSET_VERSION

__all__ = ["register", "tensor_types"]

_lock = threading.Lock()

_DOC = (
    "Identity in the forward pass; blocks the gradient in the backward pass "
    "(like tf.stop_gradient or torch.Tensor.detach)."
)


def tensor_types() -> list[str]:
    """Every tensor type ONNX's own Identity accepts in the installed onnx, e.g. "tensor(float)"."""
    identity = onnx.defs.get_schema("Identity")
    allowed = identity.type_constraints[0].allowed_type_strs
    return sorted(t for t in allowed if t.startswith("tensor("))


def _infer(ctx: onnx.shape_inference.InferenceContext) -> None:
    """Output 0 has input 0's type: element type and shape, symbolic dims included."""
    if ctx.get_num_inputs() < 1 or not ctx.has_input(0):
        return
    input_type = ctx.get_input_type(0)
    if input_type is not None and input_type.WhichOneof("value") is not None:
        ctx.set_output_type(0, input_type)


def _schema() -> onnx.defs.OpSchema:
    param = onnx.defs.OpSchema.FormalParameter
    schema = onnx.defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        OPSET_VERSION,
        _DOC,
        inputs=[param("input", "T", "Tensor whose gradient is blocked.")],
        outputs=[param("output", "T", "The same tensor (same element type and shape).")],
        type_constraints=[("T", tensor_types(), "Any tensor type.")],
    )
    if hasattr(schema, "set_type_and_shape_inference_function"):  # absent in older onnx releases
        schema.set_type_and_shape_inference_function(_infer)
    return schema


def register() -> None:
    """Register the StopGradient schema with onnx.defs; calling it again does nothing."""
    with _lock:
        if onnx.defs.has(OP_TYPE, OPSET_VERSION, DOMAIN):
            return
        onnx.defs.register_schema(_schema())
