"""The tree of modules of an exported model, and the tensors each module hands to the rest.

Every node (subgraph nodes included) is placed in the module its exporter recorded (see
:mod:`._scopes`). A node without scope information (an exporter helper such as a shared
weight's ``Identity``) joins the deepest module holding all of its readers; a node inside an
If/Loop body without its own scope joins the module of the node holding the body.

A module's *outputs* are the tensors its nodes produce that something outside the module
reads, or that are graph outputs. Reads by ``Shape`` and ``Size`` do not count: they carry
neither values nor gradients, only sizes.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from ..errors import TensorNotFoundError
from ..graph import FLOAT_TYPES, MAX_DEPTH, is_stop_gradient, node_label, subgraph_attributes, too_deep_error
from ..passes import closest_names
from ._scopes import Chain, node_chain, normalize_path

__all__ = ["NO_SCOPES_MESSAGE", "Module", "ModuleOutput", "ModuleTree"]

#: Ops whose reads of a tensor use only its shape.
_SIZE_ONLY = frozenset({"Shape", "Size"})

NO_SCOPES_MESSAGE = (
    "the model has no module scope information (no '/'-scoped node names, no "
    "pkg.torch.onnx.name_scopes metadata); name tensors with --at instead"
)


@dataclass(frozen=True)
class ModuleOutput:
    """A tensor a module produces and the nodes outside the module that read it."""

    tensor: str
    #: Labels of the reading nodes outside the module (as ``insert --consumer`` takes them).
    readers: tuple[str, ...]
    #: True when the tensor is also an output of the model.
    graph_output: bool = False
    #: True when a StopGradient outside the module reads it already (not among ``readers``).
    stopped: bool = False


@dataclass
class Module:
    """One module: its place in the tree and the nodes inside it (its sub-modules' included)."""

    path: str
    parent: str | None
    class_name: str = ""
    children: list[str] = field(default_factory=list)
    #: Positions of the nodes inside, in :attr:`ModuleTree.nodes`.
    nodes: list[int] = field(default_factory=list)


@dataclass
class _Entry:
    node: onnx.NodeProto
    label: str
    depth: int
    holder: int | None
    chain: Chain | None = None
    classes: tuple[str, ...] = ()
    placed: bool = False  # the chain was chosen here, not recorded by the exporter


@dataclass
class _Read:
    entry: int | None  # the reading node (a holder for a subgraph output), None for a graph output
    label: str
    size_only: bool = False
    stop: bool = False


class ModuleTree:
    """Modules of ``model`` by path (``""`` is the whole model), built in one walk."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.entries: list[_Entry] = []
        self._producer: dict[str, int] = {}
        self._reads: dict[str, list[_Read]] = {}
        self._constants: set[str] = set()
        params = {t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
        self._constants.update(value.name for value in model.graph.input if value.name not in params)
        self._walk(model.graph, "", 0, None)
        for output in model.graph.output:
            if output.name:
                self._reads.setdefault(output.name, []).append(_Read(None, f"graph output {output.name}"))
        self.has_scopes = any(entry.chain for entry in self.entries)
        self._place_unscoped()
        self.modules: dict[str, Module] = {"": Module("", None, "")}
        self._build_modules()

    # --- building -------------------------------------------------------------------

    def _walk(self, graph: onnx.GraphProto, path: str, depth: int, holder: int | None) -> None:
        if depth > MAX_DEPTH:
            raise too_deep_error()
        self._constants.update(t.name for t in graph.initializer if t.data_type not in FLOAT_TYPES)
        for index, node in enumerate(graph.node):
            label = node_label(node, index)
            chain, classes = node_chain(node)
            position = len(self.entries)
            self.entries.append(_Entry(node, label, depth, holder, chain, classes))
            size_only = node.op_type in _SIZE_ONLY and not node.domain
            stop = is_stop_gradient(node)
            for name in node.input:
                if name:
                    self._reads.setdefault(name, []).append(_Read(position, label, size_only, stop))
            for name in node.output:
                if name:
                    self._producer.setdefault(name, position)
            has_body = any(True for _ in subgraph_attributes(node))
            if not has_body and all(name in self._constants for name in node.input if name):
                self._constants.update(name for name in node.output if name)
            for attr_name, sub in subgraph_attributes(node):
                sub_path = f"{path}/{label}:{attr_name}" if path else f"{label}:{attr_name}"
                self._walk(sub, sub_path, depth + 1, position)
                for slot, value in enumerate(sub.output):
                    if value.name:
                        self._reads.setdefault(value.name, []).append(
                            _Read(position, f"{sub_path} output {slot}")
                        )

    def _place_unscoped(self) -> None:
        """Give every node without scope information a chain (see the module docstring)."""
        body_chains: dict[int, list[Chain]] = {}
        for entry in self.entries:
            if entry.holder is not None and entry.chain is not None:
                body_chains.setdefault(entry.holder, []).append(entry.chain)
        for position in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[position]
            if entry.chain is not None or entry.depth:
                continue
            inner = body_chains.get(position)
            entry.placed = True
            entry.chain = _common(inner) if inner else _common(self._reader_chains(entry.node))
        for entry in self.entries:  # holders come before their bodies
            if entry.chain is None:
                entry.placed = True
                holder = self.entries[entry.holder] if entry.holder is not None else None
                entry.chain = holder.chain if holder is not None and holder.chain is not None else ()

    def _reader_chains(self, node: onnx.NodeProto) -> list[Chain]:
        chains: list[Chain] = []
        for name in node.output:
            for read in self._reads.get(name, ()):
                if read.entry is None:
                    chains.append(())
                else:
                    chain = self.entries[read.entry].chain
                    if chain is not None:
                        chains.append(chain)
        return chains

    def _build_modules(self) -> None:
        """Modules in the order the exporter's own scopes first use them, then the placed nodes."""
        order = sorted(range(len(self.entries)), key=lambda position: self.entries[position].placed)
        for position in order:
            entry = self.entries[position]
            chain = entry.chain or ()
            self.modules[""].nodes.append(position)
            parent = ""
            for level, path in enumerate(chain):
                module = self.modules.get(path)
                if module is None:
                    module = self.modules[path] = Module(path, parent)
                    self.modules[parent].children.append(path)
                if not module.class_name and len(entry.classes) == len(chain):
                    module.class_name = entry.classes[level].rsplit(".", 1)[-1]
                module.nodes.append(position)
                parent = path
        for module in self.modules.values():
            module.nodes.sort()

    # --- queries --------------------------------------------------------------------

    def paths(self) -> list[str]:
        """Every module path except the root, parents before children (depth first)."""
        found: list[str] = []
        stack = list(reversed(self.modules[""].children))
        while stack:
            path = stack.pop()
            found.append(path)
            stack.extend(reversed(self.modules[path].children))
        return found

    def outputs(self, path: str) -> tuple[ModuleOutput, ...]:
        """The tensors module ``path`` produces that are read outside it or are graph outputs."""
        inside = set(self.modules[path].nodes)
        found: list[ModuleOutput] = []
        for position in self.modules[path].nodes:
            for tensor in self.entries[position].node.output:
                reads = self._reads.get(tensor, ()) if tensor and tensor not in self._constants else ()
                outside = [r for r in reads if not r.size_only and (r.entry is None or r.entry not in inside)]
                if outside:
                    readers = tuple(
                        dict.fromkeys(r.label for r in outside if r.entry is not None and not r.stop)
                    )
                    ends = any(r.entry is None for r in outside)
                    found.append(ModuleOutput(tensor, readers, ends, any(r.stop for r in outside)))
        return tuple(found)

    def module_ending(self, tensor: str) -> str:
        """The outermost module that hands ``tensor`` on (see :meth:`outputs`), else the
        innermost module that computes it, else ``""``."""
        position = self._producer.get(tensor)
        if position is None:
            return ""
        chain = self.entries[position].chain or ()
        for path in chain:
            if any(out.tensor == tensor for out in self.outputs(path)):
                return path
        return chain[-1] if chain else ""

    def scoped_labels(self) -> list[str]:
        """For each main-graph node, its label with the module scope as a ``/``-path
        (``/bert/encoder/layer.0/node_add_4``); labels that have ``/`` already are kept."""
        labels = []
        for entry in self.entries:
            if entry.depth:
                continue
            chain = entry.chain or ()
            if "/" in entry.label or not chain:
                labels.append(entry.label)
                continue
            parts = [chain[0], *(inner[len(outer) + 1 :] for outer, inner in itertools.pairwise(chain))]
            labels.append("/" + "/".join(parts) + "/" + entry.label)
        return labels

    def node_modules(self) -> list[str]:
        """For each main-graph node, the innermost module it belongs to (``""``: none)."""
        return [(entry.chain or ("",))[-1] for entry in self.entries if not entry.depth]

    def resolve(self, names: Iterable[str]) -> list[str]:
        """Module paths for user names: exact paths (dots or slashes) or globs.

        In a glob ``*`` and ``?`` stay within one dotted part, ``**`` crosses parts:
        ``bert.encoder.layer.*`` is every layer, ``bert.**`` everything below ``bert``.
        Raises TensorNotFoundError naming the closest modules for a name that matches none.
        """
        chosen: dict[str, None] = {}
        for name in names:
            if not self.has_scopes:
                raise TensorNotFoundError(NO_SCOPES_MESSAGE)
            wanted = normalize_path(name)
            if any(char in wanted for char in "*?["):
                pattern = _glob_regex(wanted)
                hits = [path for path in self.paths() if pattern.fullmatch(path)]
            else:
                hits = [wanted] if wanted in self.modules and wanted else []
            if not hits:
                raise TensorNotFoundError(self._unknown(name, wanted))
            chosen.update(dict.fromkeys(hits))
        return list(chosen)

    def _unknown(self, name: str, wanted: str) -> str:
        close = closest_names(wanted.strip("*?"), self.paths())
        if not wanted:
            what = "'' is the whole model, not a module; name a module"
        else:
            what = f"no module {name!r} in the model"
        if close:
            return f"{what}; close module paths: " + ", ".join(close)
        top = ", ".join(self.modules[""].children[:5])
        return f"{what}; its top-level modules are: {top} (`onnx-stopgrad points MODEL` lists all)"


def _common(chains: list[Chain]) -> Chain:
    """The longest chain every one of ``chains`` starts with (``()`` for none)."""
    if not chains:
        return ()
    first = chains[0]
    length = len(first)
    for chain in chains[1:]:
        length = min(length, len(chain))
        for level in range(length):
            if chain[level] != first[level]:
                length = level
                break
    return first[:length]


def _glob_regex(glob: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(glob):
        if glob.startswith("**", index):
            parts.append(".*")
            index += 2
            continue
        char = glob[index]
        if char == "*":
            parts.append("[^.]*")
        elif char == "?":
            parts.append("[^.]")
        elif char == "[":
            end = glob.find("]", index + 1)
            if end == -1:
                parts.append(re.escape(char))
            else:
                parts.append(fnmatch.translate(glob[index : end + 1])[4:-3])
                index = end
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts))
