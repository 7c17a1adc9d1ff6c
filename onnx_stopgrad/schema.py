"""ONNX schema for StopGradient (placeholder: being written for issue 2)."""


def register() -> None:
    """Register the schema with onnx.defs (idempotent)."""
