"""The JSON form of analyze is stable: keys and types."""

from __future__ import annotations

import json

from analysis_graphs import shared_weight

from onnx_stopgrad.analysis import SCHEMA_VERSION, analyze

PARAM = {"name": str, "dtype": str, "shape": list, "elements": int, "bytes": int, "blocked_by": list}
TOTALS = {"count": int, "elements": int, "bytes": int}
STOP = {
    "name": str,
    "input": str,
    "output": str,
    "origin": str,
    "freezes": list,
    "blocks_anything": bool,
    "module": str,
}
GRAPH = {
    "source": str, "unit": str, "with_stops": int, "without_stops": int, "removed": int,
    "onnxruntime_version": (str, type(None)), "fallback_reason": (str, type(None)),
    "static_with_stops": int, "static_without_stops": int,
}  # fmt: skip
COSTS = {
    "backward_flops_with_stops": int, "backward_flops_without_stops": int, "backward_flops_saved": int,
    "activation_bytes_with_stops": int, "activation_bytes_without_stops": int,
    "activation_bytes_saved": int, "activation_source": str, "dims": dict, "dims_defaulted": list,
    "unknown_intermediate_dims": int, "tensors_of_unknown_size": int, "assumptions": list,
}  # fmt: skip
TOP = {
    "schema_version": int, "model": str, "loss_outputs": list, "stops": list, "frozen": list,
    "partially_blocked": list, "unaffected": list, "unreachable": list, "constant": list, "totals": dict,
    "no_gradient_nodes": list, "gradient_graph": dict, "costs": dict, "warnings": list, "modes": list,
    "constructs": list,
}  # fmt: skip


def _check(obj: dict, spec: dict) -> None:
    assert set(obj) == set(spec), set(obj) ^ set(spec)
    for key, kind in spec.items():
        assert isinstance(obj[key], kind), (key, obj[key])


def test_json_keys_and_types() -> None:
    data = json.loads(analyze(shared_weight(), use_onnxruntime=False).to_json())
    _check(data, TOP)
    assert data["schema_version"] == SCHEMA_VERSION == 1
    for key in ("frozen", "partially_blocked", "unaffected", "unreachable", "constant"):
        for item in data[key]:
            _check(item, PARAM)
        _check(data["totals"][key], TOTALS)
    assert data["partially_blocked"] and data["unaffected"]
    for stop in data["stops"]:
        _check(stop, STOP)
        assert stop["origin"] in ("model", "at")
    for node in data["no_gradient_nodes"]:
        _check(node, {"name": str, "op_type": str, "module": str})
    _check(data["gradient_graph"], GRAPH)
    assert data["gradient_graph"]["source"] == "static"
    _check(data["costs"], COSTS)
