"""One graph model under every pass.

* :mod:`._walk`: the one depth-limited walk over subgraphs, node labels, what a node reads.
* :mod:`._index`: :class:`GraphIndex`, built once per model by a single validating scan:
  scopes, producers and readers of watched names, the StopGradient nodes.
* :mod:`._differentiable`: THE rule for which inputs ONNX Runtime differentiates, and the
  one type inference (:func:`infer_types`, :func:`element_types`).
* :mod:`._types`: the one call of ONNX shape inference, on a weight-free copy of the model.
* :mod:`._reach`: reachability over tensor links (all, stop-free, differentiated).
* :mod:`._gradient_flow`: which parameters train, are frozen, constant or unreachable.
* :mod:`._unsupported`: models ONNX Runtime 1.19 cannot train at all, found beforehand.
"""

from __future__ import annotations

from ._differentiable import (
    FLOAT_TYPES,
    NO_GRADIENT_BUILDER_INPUTS,
    NON_DIFFERENTIABLE_INPUTS,
    ORT_STOP_GRADIENT_EDGES,
    UNKNOWN_TYPE,
    carries_gradient,
    differentiable_inputs,
    element_types,
    infer_types,
)
from ._gradient_flow import (
    GradientFlow,
    analyze_gradient_flow,
    parameter_names,
)
from ._index import GraphIndex, Read, Scope, StopSite, iter_scopes, resolved_reads, scan, validate
from ._reach import StopLink, TensorLinks, gradient_reach, reach_back
from ._types import (
    HOLLOW_LOCATION,
    KEPT_ELEMENTS,
    copy_without,
    hollow_copy,
    inferred_graph,
    run_shape_inference,
    weight_free_copy,
)
from ._unsupported import nodes_ort_cannot_differentiate
from ._walk import (
    MAX_DEPTH,
    NodeSite,
    free_names,
    is_stop_gradient,
    iter_graphs,
    iter_graphs_with_attributed_nodes,
    iter_node_sites,
    iter_nodes,
    node_label,
    node_reads,
    not_utf8_error,
    scope_path,
    subgraph_attributes,
    subgraphs,
    too_deep_error,
)

__all__ = [
    "FLOAT_TYPES",
    "HOLLOW_LOCATION",
    "KEPT_ELEMENTS",
    "MAX_DEPTH",
    "NON_DIFFERENTIABLE_INPUTS",
    "NO_GRADIENT_BUILDER_INPUTS",
    "ORT_STOP_GRADIENT_EDGES",
    "UNKNOWN_TYPE",
    "GradientFlow",
    "GraphIndex",
    "NodeSite",
    "Read",
    "Scope",
    "StopLink",
    "StopSite",
    "TensorLinks",
    "analyze_gradient_flow",
    "carries_gradient",
    "copy_without",
    "differentiable_inputs",
    "element_types",
    "free_names",
    "gradient_reach",
    "hollow_copy",
    "infer_types",
    "inferred_graph",
    "is_stop_gradient",
    "iter_graphs",
    "iter_graphs_with_attributed_nodes",
    "iter_node_sites",
    "iter_nodes",
    "iter_scopes",
    "node_label",
    "node_reads",
    "nodes_ort_cannot_differentiate",
    "not_utf8_error",
    "parameter_names",
    "reach_back",
    "resolved_reads",
    "run_shape_inference",
    "scan",
    "scope_path",
    "subgraph_attributes",
    "subgraphs",
    "too_deep_error",
    "validate",
    "weight_free_copy",
]
