"""Real exports (torch.onnx.export, TorchScript exporter: dynamo=False gives stable
``/module/Op_output_0`` names): a small CNN and a small transformer encoder.

The stopped model must compute exactly what the export computes, and the parameters
``list`` reports as frozen must be exactly those PyTorch gives no gradient when the same
tensor is ``.detach()``-ed.
"""

from __future__ import annotations

import onnx
import pytest
from rewrite_cases import assert_same_outputs, check, is_toposorted, stop_nodes

from onnx_stopgrad import insert_stop_gradient, list_stop_gradients, remove_stop_gradient

torch = pytest.importorskip("torch")


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.head = torch.nn.Linear(8 * 4 * 4, 5)
        self.detach_after_conv1 = False

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        if self.detach_after_conv1:
            h = h.detach()
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.head(h.flatten(1))


class SmallEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(6, 16)
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.layers = torch.nn.ModuleList(
            [layer, torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)]
        )
        self.out = torch.nn.Linear(16, 3)
        self.detach_after_layer0 = False

    def forward(self, x):
        h = self.layers[0](self.embed(x))
        if self.detach_after_layer0:
            h = h.detach()
        return self.out(self.layers[1](h))


def _export(module, example, path) -> onnx.ModelProto:
    """Export with every parameter kept under its own name: random values (the exporter
    merges equal initializers) and no constant folding (it would pre-transpose weights)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.3)
    module.eval()
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        do_constant_folding=False,
    )
    model = onnx.load(str(path))
    model.ir_version = min(model.ir_version, 10)
    return model


def _torch_frozen(module, example) -> set[str]:
    """Parameters with no gradient when the tensor is detached (PyTorch autograd)."""
    module.zero_grad(set_to_none=True)
    module(example).sum().backward()
    return {name for name, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}


def _output_of(model: onnx.ModelProto, prefix: str, op_type: str) -> str:
    """The last output of an ``op_type`` node whose name starts with ``prefix``."""
    hits = [n.output[0] for n in model.graph.node if n.name.startswith(prefix) and n.op_type == op_type]
    assert hits, f"no {op_type} under {prefix}"
    return hits[-1]


def _check_roundtrip(source: onnx.ModelProto, tensor: str, feeds) -> onnx.ModelProto:
    model, report = insert_stop_gradient(source, tensor)
    assert report.modified and len(stop_nodes(model.graph)) == 1
    check(model)
    assert is_toposorted(model.graph)
    assert_same_outputs(source, model, feeds)
    restored, _ = remove_stop_gradient(model)
    assert restored.graph == source.graph
    return model


def test_small_cnn(tmp_path):
    torch.manual_seed(0)
    module = SmallCNN()
    example = torch.randn(2, 1, 8, 8)
    source = _export(module, example, tmp_path / "cnn.onnx")
    tensor = _output_of(source, "/", "Relu")  # the last Relu: after conv2
    first_relu = next(n.output[0] for n in source.graph.node if n.op_type == "Relu")
    model = _check_roundtrip(source, first_relu, {"x": example.numpy()})
    assert tensor != first_relu
    module.detach_after_conv1 = True
    frozen = list_stop_gradients(model).frozen_parameters
    assert set(frozen) == _torch_frozen(module, example) == {"conv1.weight", "conv1.bias"}


def test_small_transformer_encoder(tmp_path):
    torch.manual_seed(0)
    module = SmallEncoder()
    example = torch.randn(2, 5, 6)
    source = _export(module, example, tmp_path / "encoder.onnx")
    layer0_out = _output_of(source, "/layers.0/", "LayerNormalization")
    model = _check_roundtrip(source, layer0_out, {"x": example.numpy()})
    module.detach_after_layer0 = True
    expected = _torch_frozen(module, example)
    assert any(name.startswith("layers.0.") for name in expected) and "embed.weight" in expected
    frozen = set(list_stop_gradients(model).frozen_parameters)
    assert frozen == expected
