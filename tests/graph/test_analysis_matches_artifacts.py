"""Property test: analyze's frozen/trainable sets equal the artifacts' on random graphs.

Graphs mix Add/Mul, Pow (a parameter as exponent: ONNX Runtime does not differentiate
it), StopGradient, If (branches reading outer tensors, sometimes with a stop inside) and
Loop (over the data input, sometimes with a stop inside; ORT 1.19 has no Loop gradient).
Tensors a branch reads from outside are never differentiated (ORT 1.19 fails or aborts on
them): parameters behind them are constants to both. The reference is ONNX Runtime's
own build: the training model it writes has a gradient for exactly the trainable
parameters. A stop inside a subgraph is refused by training (one error line); so is a
model where nothing trains.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE
from onnx_stopgrad.analysis import analyze
from onnx_stopgrad.errors import TrainingError

pytest.importorskip("onnxruntime.training")
from onnx_stopgrad.training import generate_artifacts

_FLOAT2 = [2]


@dataclass
class _Builder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    stop_in_body: bool = False

    def stop(self, source: str, out: str) -> onnx.NodeProto:
        return helper.make_node(OP_TYPE, [source], [out], name=f"stop_{out}", domain=DOMAIN)


def _value(
    name: str, elem: int = TensorProto.FLOAT, shape: list[int] | None = _FLOAT2
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


@st.composite
def random_models(draw: st.DrawFn) -> onnx.ModelProto:
    n_params = draw(st.integers(2, 4))
    b = _Builder(tensors=[f"p{i}" for i in range(n_params)] + ["x"])
    pick = st.sampled_from
    for i in range(draw(st.integers(2, 6))):
        op = draw(pick(["Add", "Mul", "Pow", "Stop", "Stop", "If", "Loop"]))
        out, a = f"t{i}", draw(pick(b.tensors))
        c = draw(
            pick([t for t in b.tensors if t != a])
        )  # ORT 1.19: Add(p, p) -> "Duplicate definition of p_grad"
        if op in ("Add", "Mul", "Pow"):
            b.nodes.append(helper.make_node(op, [a, c], [out], name=f"n_{out}"))
        elif op == "Stop":
            b.nodes.append(b.stop(a, out))
        elif op == "If":
            inner_stop = draw(st.booleans())
            b.stop_in_body |= inner_stop
            then_nodes = [helper.make_node("Mul", [a, c], [f"{out}_m"], name=f"n_{out}_m")]
            then_nodes.append(
                b.stop(f"{out}_m", f"{out}_t")
                if inner_stop
                else helper.make_node("Identity", [f"{out}_m"], [f"{out}_t"], name=f"n_{out}_t")
            )
            then_branch = helper.make_graph(then_nodes, f"{out}_then", [], [_value(f"{out}_t")])
            other = draw(pick(b.tensors))
            else_nodes = [helper.make_node("Add", [a, other], [f"{out}_e"], name=f"n_{out}_e")]
            else_branch = helper.make_graph(else_nodes, f"{out}_else", [], [_value(f"{out}_e")])
            b.nodes.append(
                helper.make_node(
                    "If", ["cond"], [out], name=f"n_{out}", then_branch=then_branch, else_branch=else_branch
                )
            )
        else:  # Loop over the data input: ONNX Runtime has no gradient for outer parameters a body reads
            inner_stop = draw(st.booleans())
            b.stop_in_body |= inner_stop
            body_nodes = [helper.make_node("Identity", [f"{out}_ci"], [f"{out}_co"], name=f"n_{out}_c")]
            if inner_stop:
                body_nodes.append(b.stop(f"{out}_v", f"{out}_s"))
                body_nodes.append(
                    helper.make_node("Mul", [f"{out}_s", f"{out}_v"], [f"{out}_vo"], name=f"n_{out}_vo")
                )
            else:
                body_nodes.append(
                    helper.make_node("Mul", [f"{out}_v", f"{out}_v"], [f"{out}_vo"], name=f"n_{out}_vo")
                )
            body = helper.make_graph(
                body_nodes,
                f"{out}_body",
                [
                    _value(f"{out}_i", TensorProto.INT64, []),
                    _value(f"{out}_ci", TensorProto.BOOL, []),
                    _value(f"{out}_v"),
                ],
                [_value(f"{out}_co", TensorProto.BOOL, []), _value(f"{out}_vo")],
            )
            b.nodes.append(helper.make_node("Loop", ["trips", "go", "x"], [out], name=f"n_{out}", body=body))
        b.tensors.append(out)
    produced = [name for name in b.tensors if name.startswith("t")]
    output = draw(pick(produced))
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 2).astype(np.float32), f"p{i}") for i in range(n_params)
    ]
    inits += [
        numpy_helper.from_array(np.array(2, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "go"),
    ]
    graph = helper.make_graph(
        b.nodes, "g", [_value("x"), _value("cond", TensorProto.BOOL, [])], [_value(output)], inits
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 9
    model.doc_string = "stop in body" if b.stop_in_body else ""
    return model


def _gradients_in(training_model: onnx.ModelProto, params: list[str]) -> set[str]:
    """Parameters whose gradient ORT's training model computes (``<name>_grad...`` tensors)."""
    names = {name for node in training_model.graph.node for name in node.output}
    names.update(v.name for v in training_model.graph.output)
    return {p for p in params if any(n.startswith(f"{p}_grad") for n in names)}


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_models())
def test_analyze_agrees_with_the_artifacts(model: onnx.ModelProto) -> None:
    report = analyze(model, use_onnxruntime=False)
    trainable = {p.name for p in [*report.unaffected, *report.partially_blocked]}
    frozen = {p.name for p in report.frozen}
    params = [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    with tempfile.TemporaryDirectory() as scratch:
        if model.doc_string == "stop in body":
            with pytest.raises(TrainingError, match="inside the subgraph"):
                generate_artifacts(model, loss="mse", artifact_directory=scratch, measure_removed=False)
            return
        if any("cannot differentiate node" in w for w in report.warnings):
            with pytest.raises(TrainingError, match="cannot differentiate node"):
                generate_artifacts(model, loss="mse", artifact_directory=scratch, measure_removed=False)
            return
        built = generate_artifacts(model, loss="mse", artifact_directory=scratch, measure_removed=False)
        training_model = onnx.load(f"{scratch}/training_model.onnx")
    assert set(built.trainable) == trainable
    assert set(built.frozen) == frozen
    assert _gradients_in(training_model, params) == trainable  # what ORT really differentiates
