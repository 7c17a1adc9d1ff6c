"""A corpus of small, valid models to mutate: hand-built graphs, If/Loop, external data,
a StopGradient already inserted, and a torch export.

Every model has ``ir_version`` 10 and opset 17 so that ONNX Runtime 1.19 loads it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad._names import DOMAIN, OP_TYPE, OPSET_VERSION

__all__ = ["WEIGHTS_FILE", "CorpusModel", "build_corpus", "finish", "write_model"]

WEIGHTS_FILE = "weights.bin"


@dataclass(frozen=True)
class CorpusModel:
    """A valid model, whether it stores its weights externally, and tensors to stop at."""

    name: str
    proto: onnx.ModelProto
    external: bool
    targets: tuple[str, ...]


def finish(graph: onnx.GraphProto, *, stop: bool = False) -> onnx.ModelProto:
    """Wrap ``graph`` in a model ORT 1.19 can load (IR 10, opset 17)."""
    opsets = [helper.make_opsetid("", 17)]
    if stop:
        opsets.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="reliability-corpus")
    model.ir_version = 10
    return model


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _mlp_graph(rng: np.random.Generator, *, stop: bool = False) -> onnx.GraphProto:
    relu_out = "h1r"
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="add1"),
        helper.make_node("Relu", ["h1b"], ["h1r"], name="relu1"),
    ]
    if stop:
        nodes.append(helper.make_node(OP_TYPE, ["h1r"], ["h1r_stop"], name="stop1", domain=DOMAIN))
        relu_out = "h1r_stop"
    nodes += [
        helper.make_node("MatMul", [relu_out, "W2"], ["h2"], name="mm2"),
        helper.make_node("Add", ["h2", "b2"], ["y"], name="add2"),
    ]
    return helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [_weight(rng, "W1", 4, 8), _weight(rng, "b1", 8), _weight(rng, "W2", 8, 3), _weight(rng, "b2", 3)],
        value_info=[helper.make_tensor_value_info("h1r", TensorProto.FLOAT, [2, 8])],
    )


def _if_graph(rng: np.random.Generator) -> onnx.GraphProto:
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["h", "Wt"], ["t_out"], name="then_mm")],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])],
    )
    else_branch = helper.make_graph(
        [
            helper.make_node("MatMul", ["h", "We"], ["e_mm"], name="else_mm"),
            helper.make_node("Relu", ["e_mm"], ["e_out"], name="else_relu"),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu0"),
        helper.make_node("If", ["cond"], ["z"], name="if0", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["z", "b"], ["y"], name="add0"),
    ]
    return helper.make_graph(
        nodes,
        "if_model",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [_weight(rng, "Wt", 4, 3), _weight(rng, "We", 4, 3), _weight(rng, "b", 3)],
    )


def _loop_graph(rng: np.random.Generator) -> onnx.GraphProto:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("MatMul", ["acc_in", "Wl"], ["acc_mm"], name="body_mm"),
            helper.make_node("Tanh", ["acc_mm"], ["acc_out"], name="body_tanh"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, 4]),
        ],
    )
    nodes = [
        helper.make_node("Loop", ["trip", "keep_going", "x"], ["r"], name="loop0", body=body),
        helper.make_node("Relu", ["r"], ["y"], name="relu_out"),
    ]
    return helper.make_graph(
        nodes,
        "loop_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [
            _weight(rng, "Wl", 4, 4),
            numpy_helper.from_array(np.array(3, np.int64), "trip"),
            numpy_helper.from_array(np.array(True), "keep_going"),
        ],
    )


def _torch_cnn() -> onnx.ModelProto | None:
    """A small CNN exported by torch.onnx.export, or None where torch is missing."""
    try:
        import torch
    except ImportError:
        return None

    class SmallCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.head = torch.nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).flatten(1))

    torch.manual_seed(0)
    buffer = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SmallCNN(),
            (torch.randn(2, 1, 8, 8),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = 10
    return model


def build_corpus(with_torch: bool = True) -> list[CorpusModel]:
    """The seed models, each checked with onnx.checker."""
    rng = np.random.default_rng(0)
    corpus = [
        CorpusModel("mlp", finish(_mlp_graph(rng)), False, ("h1r", "W1", "x")),
        CorpusModel("mlp_external", finish(_mlp_graph(rng)), True, ("h1b", "W2")),
        CorpusModel("mlp_stopped", finish(_mlp_graph(rng, stop=True), stop=True), False, ("h2", "h1r")),
        CorpusModel("if", finish(_if_graph(rng)), False, ("h", "Wt", "z")),
        CorpusModel("loop", finish(_loop_graph(rng)), False, ("r", "Wl")),
    ]
    if with_torch:
        cnn = _torch_cnn()
        if cnn is not None:
            targets = tuple(n.output[0] for n in cnn.graph.node[:2])
            corpus.append(CorpusModel("torch_cnn", cnn, False, targets))
    for entry in corpus:
        onnx.checker.check_model(entry.proto)
    return corpus


def write_model(entry: CorpusModel, directory: Path, name: str = "model.onnx") -> Path:
    """Write ``entry`` into ``directory`` (with ``weights.bin`` beside it if external)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if entry.external:
        model = onnx.ModelProto()
        model.CopyFrom(entry.proto)
        onnx.save(model, str(path), save_as_external_data=True, location=WEIGHTS_FILE, size_threshold=0)
    else:
        path.write_bytes(entry.proto.SerializeToString())
    return path
