"""Readable, collision-free names for new StopGradient nodes and tensors.

``T`` gets the tensor ``T_stopgrad`` and the node ``T/StopGradient``; on a clash a
counter is appended. The first few candidates are looked up in the same scan that finds
the targets; only when all of them are taken is every name in the model collected.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from ..graph import Scope, iter_scopes
from ._select import node_names, tensor_names

__all__ = ["NODE_SUFFIX", "TENSOR_SUFFIX", "NameAllocator"]

TENSOR_SUFFIX = "_stopgrad"
NODE_SUFFIX = "/StopGradient"
_CANDIDATES = 4


def _candidates(base: str, suffix: str) -> list[str]:
    return [f"{base}{suffix}"] + [f"{base}{suffix}_{i}" for i in range(1, _CANDIDATES)]


class NameAllocator:
    """Hands out names no graph of the model uses, nor any name handed out before."""

    def __init__(self, targets: Iterable[str]) -> None:
        self._targets = list(targets)
        self.watch: set[str] = set(self._targets)
        for target in self._targets:
            self.watch.update(_candidates(target, TENSOR_SUFFIX))
            self.watch.update(_candidates(target, NODE_SUFFIX))
        self._taken: set[str] = set()
        self._everything: set[str] | None = None
        self._model: onnx.ModelProto | None = None

    def bind(self, root: Scope, model: onnx.ModelProto) -> None:
        """Record which watched names ``model`` (scanned into ``root``) already uses."""
        self._model = model
        for scope in iter_scopes(root):
            self._taken.update(name for name in self.watch if scope.uses(name))

    def allocate(self, target: str) -> tuple[str, str]:
        """``(tensor name, node name)`` for a new StopGradient reading ``target``."""
        return self._pick(target, TENSOR_SUFFIX), self._pick(target, NODE_SUFFIX)

    def _pick(self, base: str, suffix: str) -> str:
        for name in _candidates(base, suffix):
            if name not in self._taken:
                self._taken.add(name)
                return name
        everything = self._all_names()
        counter = _CANDIDATES
        while f"{base}{suffix}_{counter}" in everything or f"{base}{suffix}_{counter}" in self._taken:
            counter += 1
        name = f"{base}{suffix}_{counter}"
        self._taken.add(name)
        return name

    def _all_names(self) -> set[str]:
        if self._everything is None:
            assert self._model is not None
            model = self._model
            self._everything = set(tensor_names(model, include_stops=True)) | set(node_names(model))
            self._everything.update(value.name for value in model.graph.output)
            self._everything.update(value.name for value in model.graph.value_info)
        return self._everything
