"""Which PyTorch module a node was exported from, read from what exporters leave in the graph.

* The dynamo exporter writes node metadata ``pkg.torch.onnx.name_scopes`` (a Python list
  literal: ``['', 'bert', 'bert.encoder', 'bert.encoder.layer.0', 'linear']``, the last
  entry being the op) and ``pkg.torch.onnx.class_hierarchy`` (the classes, aligned).
* The TorchScript exporter names nodes after their scope:
  ``/bert/encoder/layer.1/output/LayerNorm/LayerNormalization``. tf2onnx and Keras
  exports use ``/``-scoped names too (``model/dense/MatMul``).

A node's *chain* is the tuple of module paths from the outermost module down to the one
that holds it: ``("bert", "bert.encoder", "bert.encoder.layer.1")``; ``()`` is the root
(the whole model); ``None`` means the node carries no scope information at all. The
StopGradient nodes this tool inserts are named after their tensor, not a scope: without
metadata they have none.
"""

from __future__ import annotations

import ast

import onnx

from ..graph import is_stop_gradient

__all__ = ["CLASS_HIERARCHY_KEY", "NAME_SCOPES_KEY", "Chain", "node_chain", "normalize_path"]

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"

#: Module paths from the outermost to the innermost module holding a node.
Chain = tuple[str, ...]


def normalize_path(path: str) -> str:
    """A user's module path in dotted form: ``/bert/encoder/layer.1/`` -> ``bert.encoder.layer.1``."""
    return ".".join(part for part in path.strip().replace("/", ".").split(".") if part)


def node_chain(node: onnx.NodeProto) -> tuple[Chain | None, tuple[str, ...]]:
    """The node's module chain (None: no scope information) and the class of each module.

    The class tuple is empty unless the dynamo exporter recorded the class hierarchy.
    """
    props = {prop.key: prop.value for prop in node.metadata_props}
    scopes = _literal_list(props.get(NAME_SCOPES_KEY))
    if scopes is not None:
        classes = _literal_list(props.get(CLASS_HIERARCHY_KEY)) or []
        return _from_name_scopes(scopes), _module_classes(scopes, classes)
    if is_stop_gradient(node):  # named after its tensor by this tool: no scope
        return None, ()
    return _from_node_name(node.name), ()


def _literal_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def _from_name_scopes(scopes: list[str]) -> Chain:
    """``['', 'bert', 'bert.encoder', 'linear']`` -> ``('bert', 'bert.encoder')``.

    The first entry is the root and the last the op itself. Entries relative to their
    parent (``['', 'bert', 'encoder', ...]``, older exporters) are joined to full paths.
    """
    chain: list[str] = []
    for entry in scopes[1:-1]:
        if not entry:
            continue
        parent = chain[-1] if chain else ""
        full = entry if not parent or entry.startswith(parent + ".") else f"{parent}.{entry}"
        if full != parent:
            chain.append(full)
    return tuple(chain)


def _module_classes(scopes: list[str], classes: list[str]) -> tuple[str, ...]:
    """The class of each module in the chain (same length as the chain, or empty)."""
    if len(classes) != len(scopes):
        return ()
    return tuple(cls for entry, cls in zip(scopes[1:-1], classes[1:-1], strict=True) if entry)


def _from_node_name(name: str) -> Chain | None:
    """``/bert/encoder/layer.1/output/Add`` -> the chain of ``bert.encoder.layer.1.output``."""
    if "/" not in name:
        return None
    parts = [part for part in name.split("/") if part][:-1]
    chain: list[str] = []
    for level, part in enumerate(parts):
        # TorchScript names a child of an nn.Sequential it calls with the Sequential's own
        # name in front: /layer1/layer1.0/conv1/Conv is layer1.0.conv1, not layer1.layer1.0
        repeats_parent = level > 0 and part.startswith(parts[level - 1] + ".")
        base = (chain[-2] if level > 1 else "") if repeats_parent else (chain[-1] if chain else "")
        chain.append(f"{base}.{part}" if base else part)
    return tuple(chain)
