"""How valid an input must be, and how valid the output then is.

Models ONNX Runtime runs are accepted even when the ONNX checker rejects them (published
exports often have a graph output without a type): one warning says so, and the output
must be no less valid than the input: it passes the checker, or fails it for the same
reason as the input. ``strict`` refuses such inputs instead.
"""

from __future__ import annotations

import logging
import os

import onnx

from ..errors import InvalidModelError
from ..graph import is_stop_gradient, iter_nodes, validate

__all__ = ["accept_input", "check_output", "checker_problem"]

log = logging.getLogger(__name__)


def checker_problem(model: str | os.PathLike[str] | onnx.ModelProto) -> str | None:
    """The ONNX checker's first complaint about a model file or proto, or None."""
    try:
        onnx.checker.check_model(model if isinstance(model, onnx.ModelProto) else os.fspath(model))
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def accept_input(path: str | os.PathLike[str], strict: bool) -> str | None:
    """None for a file the checker accepts; else refuse it (``strict``) or warn once and
    return the checker's complaint (for :func:`check_output`)."""
    problem = checker_problem(path)
    if problem is None:
        return None
    if strict:
        raise InvalidModelError(
            f"{os.fspath(path)}: the ONNX checker rejects the model ({problem}); fix or re-export it, "
            "or drop --strict"
        )
    log.warning(
        "%s: the ONNX checker rejects the input (%s); continuing, the output keeps that problem only",
        os.fspath(path),
        problem,
    )
    return problem


def check_output(model: onnx.ModelProto, input_problem: str | None) -> None:
    """Raise InvalidModelError when ``model`` (the rewritten input) is less valid than the
    input was. Nothing to do for an input the checker accepted (the passes keep it valid).
    Otherwise the checker must find nothing, or first the input's problem; as it stops at
    its first complaint, the graph structure and every StopGradient/Identity node (what
    the passes add) are checked on their own as well."""
    if input_problem is None:
        return
    problem = checker_problem(model)
    if problem is None:
        return
    if problem == input_problem:
        validate(model)  # the structural scan: names, order, subgraphs
        problem = _node_problem(model)
    if problem is not None:
        raise InvalidModelError(
            f"the rewritten model fails the ONNX checker in a new way ({problem}; the input: "
            f"{input_problem}); nothing was written; fix the input or re-export it"
        )


def _node_problem(model: onnx.ModelProto) -> str | None:
    try:  # a corrupt ir_version or opset import cannot even make a checker context
        context = onnx.checker.C.CheckerContext()
        context.ir_version = model.ir_version
        context.opset_imports = {o.domain: o.version for o in model.opset_import}
        lexical = onnx.checker.C.LexicalScopeContext()
    except (TypeError, ValueError, OverflowError) as exc:
        return f"its IR version or opset imports are unusable ({type(exc).__name__})"
    for node, _graph in iter_nodes(model.graph):
        if is_stop_gradient(node) or (node.op_type == "Identity" and node.domain in ("", "ai.onnx")):
            try:
                onnx.checker.check_node(node, context, lexical)
            except (onnx.checker.ValidationError, ValueError, RuntimeError, TypeError) as exc:
                return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None
