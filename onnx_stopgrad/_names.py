"""The one Python source of truth for the op's identity.

The C++ library defines the same names in ``custom_ops/src/names.h``;
``tests/op/test_names.py`` proves the two agree.
"""

from __future__ import annotations

__all__ = ["DOMAIN", "MIN_ORT_VERSION", "OPSET_VERSION", "OP_TYPE", "QUALIFIED_OP"]

#: Custom ONNX domain of the StopGradient op.
DOMAIN: str = "onnx_stopgrad"
#: Op type of the node that blocks gradients.
OP_TYPE: str = "StopGradient"
#: Opset version of DOMAIN that models import.
OPSET_VERSION: int = 1
#: Oldest ONNX Runtime the op library supports (API version 18: alias maps).
MIN_ORT_VERSION: str = "1.18"
#: "domain::op" form used by torch exporters and ORT's training registries.
QUALIFIED_OP: str = f"{DOMAIN}::{OP_TYPE}"
