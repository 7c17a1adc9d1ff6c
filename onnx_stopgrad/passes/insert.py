"""Insert StopGradient nodes at named tensors.

For a tensor ``T`` the pass adds ``StopGradient(T) -> T_stopgrad`` right after ``T``'s
producer (at the top of the graph for graph inputs and initializers) and makes the chosen
readers of ``T`` read ``T_stopgrad``: every reader by default, or only the named nodes.
Readers inside subgraphs that see ``T`` from an outer graph are rewired too. Outputs of
the main graph keep their names and values. The model is changed in place, in one scan:
cost grows with the model once, not once per tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from .._names import DOMAIN, OP_TYPE, OPSET_VERSION
from ..errors import InvalidModelError, TensorNotFoundError
from ..graph import Read, Scope, is_stop_gradient, iter_nodes, iter_scopes, node_label, resolved_reads, scan
from ._constructs import is_construct_node
from ._model import ModelInput, open_model
from ._naming import NameAllocator
from ._select import node_names, not_found_message, tensor_names
from .reports import Insertion, InsertReport, Skipped

__all__ = ["insert_in_place", "insert_stop_gradient"]


@dataclass
class _Plan:
    """Every change, decided before any is made: an error leaves the model as it was.

    Rewiring goes first and node insertion last, so recorded node indices stay valid.
    """

    nodes: dict[int, list[tuple[int, onnx.NodeProto]]] = field(default_factory=dict)
    scopes: dict[int, Scope] = field(default_factory=dict)
    rewires: list[tuple[list[Read], str]] = field(default_factory=list)
    infos: list[tuple[Scope, str, str]] = field(default_factory=list)

    def add_node(self, scope: Scope, position: int, node: onnx.NodeProto, target: str) -> None:
        self.scopes[id(scope)] = scope
        self.nodes.setdefault(id(scope), []).append((position, node))
        self.infos.append((scope, target, node.output[0]))

    def apply(self) -> None:
        for reads, name in self.rewires:
            for read in reads:
                read.rewire(name)
        for scope, target, output in self.infos:
            _copy_value_info(scope, target, output)
        for key, pending in self.nodes.items():
            graph = self.scopes[key].graph
            # Back to front, so earlier positions stay valid; equal positions keep plan order.
            order = sorted(enumerate(pending), key=lambda item: (item[1][0], item[0]), reverse=True)
            for _, (position, node) in order:
                graph.node.insert(position, node)

    def __bool__(self) -> bool:
        return bool(self.nodes)


def insert_stop_gradient(
    model: ModelInput,
    at: str | Sequence[str] = (),
    consumers: Mapping[str, Iterable[str]] | None = None,
    *,
    module: str | Sequence[str] = (),
) -> tuple[Any, InsertReport]:
    """Stop the gradient at each tensor in ``at``; return ``(new model, report)``.

    ``model`` is a ModelProto (copied, never changed), a path (read without its external
    data; a ModelProto is returned) or an ``onnx_graphsurgeon.Graph`` (a Graph is returned).
    ``consumers`` maps a tensor to node names: only the edges into those nodes are stopped.
    ``module`` names PyTorch module paths (``bert.encoder.layer.1``, globs allowed): each
    output of those modules is stopped for the nodes outside the module that read it.
    """
    proto, back = open_model(model)
    report = insert_in_place(proto, at, consumers, module=module)
    return back(proto), report


def insert_in_place(
    model: onnx.ModelProto,
    at: str | Sequence[str] = (),
    consumers: Mapping[str, Iterable[str]] | None = None,
    *,
    module: str | Sequence[str] = (),
) -> InsertReport:
    """Like :func:`insert_stop_gradient`, but changes ``model`` itself.

    Raises before changing anything when a tensor, consumer or module is unknown.
    """
    wanted = {name: tuple(nodes) for name, nodes in (consumers or {}).items()}
    targets = list(dict.fromkeys([at] if isinstance(at, str) else list(at)))
    if isinstance(module, str) or module:
        _add_module_stops(model, [module] if isinstance(module, str) else list(module), targets, wanted)
    targets += [name for name in wanted if name not in targets]
    if not targets:
        raise TensorNotFoundError("no tensor given; name at least one tensor to stop")
    _check_opset(model)
    names = NameAllocator(targets)
    root = scan(model, names.watch)
    names.bind(root, model)

    plan = _Plan()
    inserted: list[Insertion] = []
    skipped: list[Skipped] = []
    for target in targets:
        owners = [scope for scope in iter_scopes(root) if scope.defines(target)]
        if not owners:
            raise TensorNotFoundError(_unknown_tensor_message(model, target))
        for owner in owners:
            outcome = _stop(owner, target, wanted.get(target), names, plan, model)
            if isinstance(outcome, Insertion):
                inserted.append(outcome)
            else:
                skipped.append(outcome)
    plan.apply()
    opset_added = bool(plan) and _ensure_opset(model)
    return InsertReport(tuple(inserted), tuple(skipped), opset_added)


def _stop(
    owner: Scope,
    target: str,
    only: tuple[str, ...] | None,
    names: NameAllocator,
    plan: _Plan,
    model: onnx.ModelProto,
) -> Insertion | Skipped:
    producer = owner.produced.get(target)
    if producer is not None and is_stop_gradient(owner.graph.node[producer]):
        return Skipped(target, "it is the output of a StopGradient already", owner.path)
    reads = resolved_reads(owner, target)
    # A gradient construct's StopGradient is one of its inner nodes, not a stop of ``target``:
    # the construct is rewired as a whole, like any other reader.
    stops = [
        r for r in reads if r.node is not None and is_stop_gradient(r.node) and not is_construct_node(r.node)
    ]
    open_reads = [r for r in reads if r not in stops]
    if only is not None:
        open_reads = _select_consumers(owner, target, only, open_reads, stops, model)
    if not open_reads:
        reason = "already stopped" if stops else "nothing reads it (graph outputs keep their values)"
        return Skipped(target, reason, owner.path)

    first_reader = min(r.top_index(owner) for r in open_reads)
    reusable = [s for s in stops if s.scope is owner and s.index is not None and s.index < first_reader]
    if reusable:
        stop_node, stop_index = reusable[0].node, reusable[0].index
        assert stop_node is not None and stop_index is not None
        node_name, output, reused = node_label(stop_node, stop_index), stop_node.output[0], True
    else:
        output, node_name = names.allocate(target)
        reused = False
        position = 0 if producer is None else producer + 1
        node = onnx.helper.make_node(OP_TYPE, [target], [output], name=node_name, domain=DOMAIN)
        plan.add_node(owner, position, node, target)
    plan.rewires.append((open_reads, output))
    consumers = tuple(dict.fromkeys(read.label for read in open_reads))
    return Insertion(target, node_name, output, consumers, owner.path, reused)


def _add_module_stops(
    model: onnx.ModelProto, modules: list[str], targets: list[str], wanted: dict[str, tuple[str, ...]]
) -> None:
    """Add the outputs of ``modules``, each for its readers outside the module, to the request.

    A tensor named in ``at`` without consumers stays stopped for every reader.
    """
    from ..modules import plan_module_stops

    for tensor, readers in plan_module_stops(model, modules).consumers.items():
        if tensor in targets and tensor not in wanted:
            continue
        wanted[tensor] = tuple(dict.fromkeys([*wanted.get(tensor, ()), *readers]))


def _unknown_tensor_message(model: onnx.ModelProto, target: str) -> str:
    for node, _ in iter_nodes(model.graph):
        if node.name == target and node.output:
            outputs = ", ".join(repr(name) for name in node.output if name)
            return f"{target!r} is a node, not a tensor; its outputs are {outputs}"
    return not_found_message("tensor", target, tensor_names(model))


def _select_consumers(
    owner: Scope,
    target: str,
    only: tuple[str, ...],
    reads: list[Read],
    stops: list[Read],
    model: onnx.ModelProto,
) -> list[Read]:
    """The reads into the named nodes; a node already behind a stop on ``target`` is skipped."""
    chosen: list[Read] = []
    for name in only:
        hits = [read for read in reads if name in read.holder_labels(owner)]
        if hits:
            chosen.extend(hit for hit in hits if hit not in chosen)
        elif stops and _reads_any(model, name, [s.node.output[0] for s in stops if s.node is not None]):
            continue  # this node reads the stopped copy already
        elif name in node_names(model):
            readers = sorted({label for read in reads for label in read.holder_labels(owner)[:1]})
            raise TensorNotFoundError(
                f"node {name!r} does not read tensor {target!r}; its readers are: "
                + (", ".join(readers) or "none")
            )
        else:
            raise TensorNotFoundError(not_found_message("node", name, node_names(model)))
    return chosen


def _reads_any(model: onnx.ModelProto, node_name: str, tensors: list[str]) -> bool:
    """Whether the node called ``node_name`` (or a node inside it) reads one of ``tensors``."""
    root = scan(model, set(tensors))
    for scope in iter_scopes(root):
        for tensor in tensors:
            for read in scope.reads.get(tensor, ()):
                if node_name in read.holder_labels(root):
                    return True
    return False


def _copy_value_info(owner: Scope, target: str, output: str) -> None:
    """Give the new tensor the dtype and shape known for ``target``."""
    info = owner.value_info.get(target)
    if info is not None and info.HasField("type"):
        value = owner.graph.value_info.add()
        value.CopyFrom(info)
        value.name = output
        value.ClearField("doc_string")
        return
    tensor = owner.initializers.get(target)
    if tensor is not None:
        owner.graph.value_info.append(
            onnx.helper.make_tensor_value_info(output, tensor.data_type, list(tensor.dims))
        )


def _check_opset(model: onnx.ModelProto) -> None:
    for opset in model.opset_import:
        if opset.domain == DOMAIN and opset.version != OPSET_VERSION:
            raise InvalidModelError(
                f"the model imports {DOMAIN} version {opset.version}, this tool writes "
                f"version {OPSET_VERSION}; upgrade onnx-stopgrad"
            )


def _ensure_opset(model: onnx.ModelProto) -> bool:
    """Import the StopGradient domain once; True if it was added now."""
    if any(opset.domain == DOMAIN for opset in model.opset_import):
        return False
    model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))
    return True
