"""show: DOT content, collapsing, valid SVG for a model of over 1,000 nodes, atomic output."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from analysis_graphs import frozen_backbone
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE
from onnx_stopgrad.visual import GraphvizError, draw

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz `dot` not installed (apt-get install -y graphviz)"
)


def _scoped_model(layers: int, per_layer: int) -> onnx.ModelProto:
    """A chain of Mul/Tanh nodes named /enc/layer.N/..., a stop in the middle."""
    nodes, inits, cur = [], [], "x"
    for layer in range(layers):
        for k in range(per_layer):
            w = f"enc.layer{layer}.w{k}"
            inits.append(numpy_helper.from_array(np.ones(4, np.float32), w))
            scope = f"/enc/layer.{layer}/block{k % 3}"
            nodes.append(helper.make_node("Mul", [cur, w], [f"{scope}/m{k}"], name=f"{scope}/Mul_{k}"))
            nodes.append(
                helper.make_node("Tanh", [f"{scope}/m{k}"], [f"{scope}/t{k}"], name=f"{scope}/Tanh_{k}")
            )
            cur = f"{scope}/t{k}"
        if layer == layers // 2:
            nodes.append(helper.make_node(OP_TYPE, [cur], ["stopped"], name="/enc/stop", domain=DOMAIN))
            cur = "stopped"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [4])], inits,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 10
    return model


def test_small_dot_marks_stop_region_and_params(tmp_path) -> None:
    report = draw(frozen_backbone(), tmp_path / "g.dot")
    text = (tmp_path / "g.dot").read_text()
    assert report.nodes == 5 and report.scope_depth == 0
    assert "octagon" in text and "StopGradient" in text
    # The encoder nodes are shaded, the head is not; parameters carry their status.
    for line in text.splitlines():
        if '"n0"' in line and "label" in line:  # /enc/mm
            assert "#c8c8c8" in line
        if '"n4"' in line and "label" in line:  # /head/mm
            assert "#ffffff" in line
    assert "W1\\nfrozen" in text and "W2\\ntrainable" in text
    assert "none collapsed" in text


def test_collapses_by_scope_and_says_so(tmp_path) -> None:
    model = _scoped_model(layers=40, per_layer=15)  # 1,201 nodes
    report = draw(model, tmp_path / "g.dot", max_nodes=150)
    text = (tmp_path / "g.dot").read_text()
    assert report.nodes == 1201
    assert report.boxes <= 150 and report.scope_depth >= 1
    assert "collapsed into" in text and "by name scope" in text
    assert "/enc/layer.3/block1" in text
    assert text.count("octagon") >= 2  # the stop stays visible (plus its legend entry)


@needs_dot
def test_svg_of_over_1000_nodes_is_valid(tmp_path) -> None:
    out = tmp_path / "big.svg"
    report = draw(_scoped_model(layers=40, per_layer=15), out)
    assert report.nodes > 1000
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "StopGradient" in texts and "legend" in texts
    assert [p.name for p in tmp_path.iterdir()] == ["big.svg"]  # no temp file left


@needs_dot
def test_png_written(tmp_path) -> None:
    out = tmp_path / "small.png"
    draw(frozen_backbone(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dot_is_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizError, match="apt-get install -y graphviz"):
        draw(frozen_backbone(), tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()
    draw(frozen_backbone(), tmp_path / "g.dot")  # DOT needs no Graphviz
    assert (tmp_path / "g.dot").exists()
