"""analyze: parameter groups, stops, warnings and estimates on hand-built graphs."""

from __future__ import annotations

import hashlib

import onnx
import pytest
from analysis_graphs import frozen_backbone, shared_weight, torch_grads, useless_stops

from onnx_stopgrad.analysis import analyze


def _names(items) -> set[str]:
    return {item.name for item in items}


def _torch_groups(model: onnx.ModelProto) -> dict[str, set[str]]:
    """frozen / partially_blocked / unaffected derived from autograd with and without detach."""
    import torch

    with_stop, without = torch_grads(model, detach=True), torch_grads(model, detach=False)
    trains = {p for p, g in with_stop.items() if g is not None}
    return {
        "frozen": {p for p, g in with_stop.items() if g is None and without[p] is not None},
        "partially_blocked": {p for p in trains if not torch.allclose(with_stop[p], without[p])},
        "unaffected": {p for p in trains if torch.allclose(with_stop[p], without[p])},
    }


@pytest.mark.parametrize("build", [frozen_backbone, shared_weight, useless_stops])
def test_parameter_groups_match_autograd(build) -> None:
    pytest.importorskip("torch")
    model = build()
    report = analyze(model, use_onnxruntime=False)
    expected = _torch_groups(model)
    assert _names(report.frozen) == expected["frozen"]
    assert _names(report.partially_blocked) == expected["partially_blocked"]
    assert _names(report.unaffected) == expected["unaffected"]


def test_frozen_backbone_exact() -> None:
    report = analyze(frozen_backbone(), dims={"batch": 5}, use_onnxruntime=False)
    assert _names(report.frozen) == {"W1", "b1"}
    assert _names(report.unaffected) == {"W2"}
    assert report.partially_blocked == []
    assert report.totals["frozen"].elements == 4 * 8 + 8
    assert report.totals["frozen"].bytes == (4 * 8 + 8) * 4
    assert {p.name: p.blocked_by for p in report.frozen} == {"W1": ["/enc/stop"], "b1": ["/enc/stop"]}
    assert {(n.name, n.op_type) for n in report.no_gradient_nodes} == {
        ("/enc/mm", "MatMul"),
        ("/enc/add", "Add"),
        ("/enc/relu", "Relu"),
    }
    assert report.warnings == []
    # Without the stop /head/mm differentiates w.r.t. its feature and W2 (2 products);
    # with it only W2 (1 product). The encoder's backward disappears entirely.
    b = 5
    head = 2 * b * 8 * 3
    encoder = 2 * b * 4 * 8 * 1 + b * 8 * 2 + b * 8 * 1  # MatMul (W1), Add (h0, b1), Relu
    assert report.costs.backward_flops_without_stops == 2 * head + encoder
    assert report.costs.backward_flops_with_stops == head
    assert report.costs.backward_flops_saved == head + encoder
    assert report.costs.dims == {"batch": 5}
    assert report.costs.activation_bytes_saved > 0


def test_shared_weight_is_partially_blocked() -> None:
    report = analyze(shared_weight(), use_onnxruntime=False)
    assert _names(report.partially_blocked) == {"W1"}
    assert _names(report.unaffected) == {"W2", "Wa"}
    assert _names(report.frozen) == set()
    assert {n.name for n in report.no_gradient_nodes} == {"/target/mm", "/target/relu"}
    stops = {s.name: s for s in report.stops}
    assert stops["/target/stop"].blocks_anything and stops["/aux/stop"].blocks_anything
    assert report.warnings == []


def test_useless_stops_warn() -> None:
    report = analyze(useless_stops(), use_onnxruntime=False)
    assert _names(report.frozen) == {"W1"}
    stops = {s.name: s for s in report.stops}
    assert not stops["/in/stop"].blocks_anything
    assert stops["/enc/stop"].blocks_anything and stops["/enc/stop"].freezes == ["W1"]
    assert any("/in/stop" in w and "blocks nothing" in w for w in report.warnings)
    assert any("no trainable parameter remains" in w for w in report.warnings)


def test_at_inserts_in_memory_only(tmp_path) -> None:
    path = tmp_path / "plain.onnx"
    onnx.save(frozen_backbone(with_stop=False), path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    proposed = analyze(path, at=["r"], use_onnxruntime=False)
    existing = analyze(frozen_backbone(), use_onnxruntime=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(tmp_path.iterdir()) == [path]
    assert [s.origin for s in proposed.stops] == ["at"]
    for key in ("frozen", "partially_blocked", "unaffected"):
        assert _names(getattr(proposed, key)) == _names(getattr(existing, key))
    assert proposed.costs.backward_flops_saved == existing.costs.backward_flops_saved


def test_loss_output_selects_targets() -> None:
    report = analyze(shared_weight(), loss_outputs=["aux"], use_onnxruntime=False)
    assert report.loss_outputs == ["aux"]
    # Only the aux head reaches this loss, through its stop: W1 is frozen, Wa trains.
    assert _names(report.frozen) == {"W1"}
    assert _names(report.unaffected) == {"Wa"}
    assert {p.name for p in report.unreachable} == {"W2"}
