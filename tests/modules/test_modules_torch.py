"""``--module PATH`` against PyTorch with a forward hook that detaches that module's output.

For Hugging Face BERT and GPT-2 and a small CNN, each by both exporters: the
tensors ``--module`` stops are the module's outputs as PyTorch computes them (run in
onnxruntime), and after ``generate_artifacts(stop_modules=...)`` one training step gives
the gradients of PyTorch's hooked model (1e-5), with the same parameters frozen.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from module_cases import (
    bert_model,
    cnn_model,
    export_case,
    gpt2_model,
    module_outputs_in_torch,
    onnx_to_torch,
    torch_gradients,
)

from onnx_stopgrad import insert_stop_gradient
from onnx_stopgrad.errors import InvalidModelError
from onnx_stopgrad.modules import cut_points
from onnx_stopgrad.training import generate_artifacts, load

pytestmark = pytest.mark.training

MAKERS = {
    "bert": (bert_model, "crossentropy"),
    "gpt2": (gpt2_model, "mse"),
    "cnn": (cnn_model, "crossentropy"),
}

#: (model, exporter) -> module paths to cut at, one at a time.
CUTS = {
    ("bert", "torchscript"): [
        "bert.embeddings",
        "bert.encoder.layer.0",
        "bert.encoder.layer.0.attention",
        "bert.encoder",
    ],
    ("bert", "dynamo"): ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1.intermediate"],
    ("gpt2", "torchscript"): ["model.h.0", "model.h.1.attn", "model.wte"],
    ("gpt2", "dynamo"): ["model.h.0", "model.h.1.mlp"],
    ("cnn", "torchscript"): [
        "stem",
        "stem.0",
        "layer1",
        "split",
        "layer1.conv1",
        "side",
        "split+side",
        "layer1+layer1.conv1",
    ],
    ("cnn", "dynamo"): ["layer1", "split", "layer2", "stem.0"],
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cache = {}

    def get(name: str, exporter: str):
        if (name, exporter) not in cache:
            make, loss = MAKERS[name]
            module, inputs, input_names, labels = make()
            path = tmp_path_factory.mktemp(f"{name}_{exporter}") / "model.onnx"
            cache[name, exporter] = export_case(
                module, inputs, labels, loss, path, exporter == "dynamo", input_names
            )
        return cache[name, exporter]

    return get


def _run_with_stop_inputs(model: onnx.ModelProto, case) -> dict[str, np.ndarray]:
    """The value of every tensor a StopGradient reads, by onnxruntime."""
    import onnxruntime as ort

    from onnx_stopgrad import session_options

    stopped = [node.input[0] for node in model.graph.node if node.op_type == "StopGradient"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in stopped)
    session = ort.InferenceSession(
        probe.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
    )
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), case.inputs, strict=True)}
    return dict(zip(stopped, session.run(stopped, feed), strict=True))


def _upstream(model: onnx.ModelProto, tensor: str) -> set[str]:
    producers = {out: node for node in model.graph.node for out in node.output}
    seen, stack = {tensor}, [tensor]
    while stack:
        node = producers.get(stack.pop())
        for name in node.input if node is not None else ():
            if name not in seen:
                seen.add(name)
                stack.append(name)
    return seen


CASES = [(name, exporter, path) for (name, exporter), paths in CUTS.items() for path in paths]


@pytest.mark.parametrize(("name", "exporter", "path"), CASES, ids=[f"{n}-{e}-{p}" for n, e, p in CASES])
def test_stops_the_tensors_pytorch_returns(exports, name, exporter, path):
    case = exports(name, exporter)
    stopped, report = insert_stop_gradient(onnx.load(str(case.path)), module=path.split("+"))
    assert report.inserted
    values = _run_with_stop_inputs(stopped, case)
    expected = [t for part in path.split("+") for t in module_outputs_in_torch(case, part)]
    params = set(onnx_to_torch(stopped, case.module))
    for tensor, value in values.items():
        if any(e.shape == value.shape and np.allclose(e, value, atol=1e-5) for e in expected):
            continue
        # dynamo computes BERT's attention mask once, inside layer 0, from the inputs and two
        # scalar constants: a stop there is harmless, as long as no parameter flows into it
        assert not _upstream(stopped, tensor) & params, f"{tensor} is not an output of {path}"
    onnx.checker.check_model(stopped, full_check=True, check_custom_domain=True)


def _ort_gradients(directory, case, input_names):
    state, module, _ = load(directory)
    module.train()
    names = module.input_names()
    arrays = {n: t.numpy() for n, t in zip(input_names, case.inputs, strict=True)}
    label = case.labels.numpy().astype(np.int64 if case.loss == "crossentropy" else np.float32)
    module(*[arrays.get(n, label) for n in names])
    return {n: p.grad.copy() for n, p in state.parameters if p.requires_grad}


@pytest.mark.parametrize(("name", "exporter", "path"), CASES, ids=[f"{n}-{e}-{p}" for n, e, p in CASES])
def test_gradients_match_pytorch_hook(exports, name, exporter, path, tmp_path):
    case = exports(name, exporter)
    model = onnx.load(str(case.path))
    input_names = [i.name for i in model.graph.input]
    mapping = onnx_to_torch(model, case.module)
    # The defaults: the exporter's float constants (dynamo's attention scale and mask
    # fills, rank 0) must stay constant; trained, they corrupt ORT 1.19's other gradients.
    constants = [
        t.name
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in mapping and not t.dims
    ]
    result = generate_artifacts(
        case.path, loss=case.loss, optimizer="adamw", artifact_directory=tmp_path,
        stop_modules=path.split("+"), measure_removed=False,
    )  # fmt: skip
    assert not set(constants) & set(result.trainable)
    ort_grads = _ort_gradients(tmp_path, case, input_names)
    expected = torch_gradients(case, path.split("+"))
    assert len(mapping) >= len(expected) - 1  # every parameter has its initializer (dynamo may fold one)
    for onnx_name, (torch_name, transposed) in mapping.items():
        want = expected[torch_name]
        if want is None:
            assert onnx_name in result.frozen, f"{torch_name} gets no gradient in PyTorch but trains in ORT"
            continue
        assert onnx_name in ort_grads, f"{torch_name} trains in PyTorch but is frozen in ORT"
        got = ort_grads[onnx_name].T if transposed else ort_grads[onnx_name]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=torch_name)
    assert any(v is None for v in expected.values())  # the cut froze something


def test_module_two_readers_and_two_outputs(exports):
    """layer1 feeds split and side; split hands two tensors on."""
    case = exports("cnn", "torchscript")
    _, layer1 = insert_stop_gradient(str(case.path), module="layer1")
    (stop,) = layer1.inserted
    assert {c.split("/")[1] for c in stop.consumers} == {"split", "side"}
    _, split = insert_stop_gradient(str(case.path), module="split")
    assert len(split.inserted) == 2


def test_whole_model_cannot_be_cut(exports):
    """The module that ends the model has only graph outputs: PyTorch has nothing to train either."""
    case = exports("gpt2", "torchscript")
    with pytest.raises(InvalidModelError, match="ends the model"):
        insert_stop_gradient(str(case.path), module="model")
    with pytest.raises(RuntimeError):
        torch_gradients(case, ["model"])  # the loss no longer depends on any parameter


def test_points_lists_layers_and_freezes_what_pytorch_freezes(exports):
    case = exports("bert", "torchscript")
    report = cut_points(str(case.path), depth=3)
    paths = [p.path for p in report.points]
    assert [p for p in paths if p.startswith("bert.encoder.layer.")] == [
        "bert.encoder.layer.0",
        "bert.encoder.layer.1",
    ]
    params = dict(case.module.named_parameters())
    for point in report.points:
        if point.frozen is None:
            continue
        grads = torch_gradients(case, [point.path])
        frozen = [n for n, g in grads.items() if g is None]
        assert point.frozen == len(frozen), point.path
        assert point.frozen_bytes == sum(params[n].numel() * 4 for n in frozen), point.path
        assert point.trainable == len(grads) - len(frozen), point.path


def test_cli_artifacts_and_analyze_with_module(exports, tmp_path):
    import json

    from click.testing import CliRunner

    from onnx_stopgrad.cli import main

    case = exports("cnn", "torchscript")
    runner = CliRunner()
    out = tmp_path / "art"
    result = runner.invoke(
        main,
        [
            "artifacts",
            str(case.path),
            "-o",
            str(out),
            "--loss",
            "crossentropy",
            "--module",
            "split",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    frozen = set(json.loads(result.output)["frozen"])
    mapping = onnx_to_torch(onnx.load(str(case.path)), case.module)
    expected = {name for name, g in torch_gradients(case, ["split"]).items() if g is None}
    assert {mapping[n][0] for n in frozen} == expected
    result = runner.invoke(main, ["analyze", str(case.path), "--module", "split", "--static", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {s["module"] for s in report["stops"]} == {"split"}
    assert {mapping[p["name"]][0] for p in report["frozen"]} == expected
    # The nodes no longer differentiated are named by module: exactly the modules whose
    # parameters PyTorch gives no gradient (where a node holds parameters).
    named = {n["module"] for n in report["no_gradient_nodes"] if n["module"]}
    with_params = {torch_name.rsplit(".", 1)[0] for torch_name, _ in mapping.values()}
    frozen_modules = {name.rsplit(".", 1)[0] for name in expected}
    assert frozen_modules <= named
    assert not named & (with_params - frozen_modules)


def test_points_on_dynamo_names_classes(exports):
    case = exports("bert", "dynamo")
    points = {p.path: p for p in cut_points(str(case.path)).points}
    assert points["bert.encoder.layer.1"].class_name == "BertLayer"
    assert [o.tensor for o in points["bert.encoder.layer.1"].outputs] == ["layer_norm_4"]
    text = cut_points(str(case.path), depth=3).format_text()
    assert "bert.encoder.layer.0 (BertLayer)" in text and "attention.self" not in text
