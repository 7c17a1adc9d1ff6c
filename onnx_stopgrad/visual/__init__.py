"""``show``: a Graphviz picture of a model's gradient flow.

StopGradient nodes are highlighted, gradient-scale and straight-through constructs are
one hexagon each, the region no gradient reaches is shaded, float parameters are
coloured by whether they train, and big graphs are collapsed by name scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._io import ModelLike, input_files, load_model, refuse_overwriting
from .._reports import ReportFields
from ..errors import TensorNotFoundError
from ..graph import analyze_gradient_flow
from ..passes import _constructs, insert_stop_gradient, validate_model
from ._dot import build_dot
from ._render import INSTALL_HINT, GraphvizError, output_format, write_picture

__all__ = ["DEFAULT_MAX_NODES", "INSTALL_HINT", "DrawReport", "GraphvizError", "draw"]

#: Above this many nodes, nodes are collapsed by name scope.
DEFAULT_MAX_NODES = 150


@dataclass(frozen=True)
class DrawReport(ReportFields):
    path: Path
    nodes: int
    boxes: int
    scope_depth: int
    chains_merged: bool

    def summary(self) -> str:
        if self.scope_depth or self.chains_merged:
            how = f"name scopes of depth {self.scope_depth}" if self.scope_depth else "straight chains"
            return f"wrote {self.path}: {self.nodes} nodes collapsed into {self.boxes} boxes by {how}"
        return f"wrote {self.path}: {self.nodes} nodes"


def draw(
    model: ModelLike,
    output: str | Path,
    at: Sequence[str] = (),
    loss_outputs: Sequence[str] | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
    modules: Sequence[str] = (),
) -> DrawReport:
    """Draw ``model`` (with stops added at ``at`` and at the outputs of ``modules``, in
    memory only) to ``output``.

    The suffix of ``output`` picks the format: .svg, .png, .pdf (need Graphviz) or .dot.
    """
    output = Path(output)
    output_format(output)  # refuse an unknown suffix before any work
    proto, directory = load_model(model)
    if directory is not None:  # never draw over the model or its external data
        refuse_overwriting([output], input_files(Path(model), proto, directory))  # type: ignore[arg-type]
    validate_model(proto)
    if at or modules:
        proto, _report = insert_stop_gradient(proto, list(at), module=list(modules))
    targets = list(loss_outputs) if loss_outputs else None
    if targets:
        known = {name for n in proto.graph.node for name in n.output} | {i.name for i in proto.graph.input}
        missing = [t for t in targets if t not in known]
        if missing:
            raise TensorNotFoundError(f"loss output {missing[0]!r} is not a tensor of the graph")
    flow = analyze_gradient_flow(_constructs.gradient_view(proto), targets)
    dot = build_dot(proto, flow, max(1, max_nodes))
    write_picture(dot.source, output)
    return DrawReport(output, dot.nodes, dot.boxes, dot.depth, dot.chains_merged)
