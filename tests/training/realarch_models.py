"""Small torchvision-style CNNs written with torch.nn (torchvision's wheel is CUDA-only here).

``ResNetish``: a ResNet-18 layout (stem, BasicBlocks with a downsample, pooling, fc);
``MobileNetish``: MobileNetV3-small's (inverted residuals, hardswish, squeeze-excitation,
a classifier with Dropout). Both take ``forward(x, stop)``, with ``stop`` applied after an
inner stage (``Tensor.detach`` for the reference, a StopGradient for the export).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn
from training_cases import StopForExport, detach

from onnx_stopgrad import DOMAIN, OPSET_VERSION

__all__ = ["MobileNetish", "ResNetish", "export", "perturb"]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetish(nn.Module):
    """conv-bn-relu stem, layer1..layer3 (one BasicBlock each), global pooling, fc."""

    backbone = ("conv1", "bn1", "layer1", "layer2")

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 12, 2)
        self.layer3 = BasicBlock(12, 16, 2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor, stop=detach) -> torch.Tensor:
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(self.layer3(stop(x)).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expanded: int, cout: int, stride: int, se: bool, hardswish: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = [nn.Conv2d(cin, expanded, 1, bias=False), nn.BatchNorm2d(expanded), act()]
        layers += [nn.Conv2d(expanded, expanded, 3, stride, 1, groups=expanded, bias=False)]
        layers += [nn.BatchNorm2d(expanded), act()]
        if se:
            layers.append(SqueezeExcite(expanded, max(4, expanded // 4)))
        layers += [nn.Conv2d(expanded, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetish(nn.Module):
    """Stem (hardswish), three inverted residuals (SE, hardswish), head conv, classifier."""

    backbone = ("features.0", "features.1", "features.2")

    def __init__(self, classes: int = 5, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish()),
            InvertedResidual(8, 8, 8, 2, se=True, hardswish=False),
            InvertedResidual(8, 24, 12, 1, se=False, hardswish=False),
            InvertedResidual(12, 32, 12, 1, se=True, hardswish=True),
            nn.Sequential(nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24), nn.Hardswish()),
        )
        self.classifier = nn.Sequential(
            nn.Linear(24, 32), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(32, classes)
        )

    def forward(self, x: torch.Tensor, stop=detach) -> torch.Tensor:
        for index, stage in enumerate(self.features):
            x = stage(x)
            if index == 2:
                x = stop(x)
        return self.classifier(x.mean((2, 3)))


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and running statistics, no two initializers equal (var > 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.2 * (noise - 0.5))
            elif name.endswith("weight") and tensor.dim() == 1:
                tensor.copy_(0.8 + 0.4 * noise)
            else:
                tensor.add_(0.05 * (noise - 0.5))
    return module


def export(module: nn.Module, x: np.ndarray) -> onnx.ModelProto:
    """torch.onnx.export (TorchScript) keeping the module's modes: BatchNormalization in the
    mode of each submodule (training_mode attribute), the StopGradient where ``stop`` is."""

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x, stop=StopForExport.apply)

    buffer = io.BytesIO()
    modes = {name: m.training for name, m in module.named_modules()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapped(), (torch.from_numpy(x),), buffer, input_names=["x"], output_names=["y"], dynamo=False,  # type: ignore[arg-type]
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
            custom_opsets={DOMAIN: OPSET_VERSION}, opset_version=17,
        )  # fmt: skip
    for name, m in module.named_modules():  # the export may flip modes; restore them
        m.train(modes[name])
    model = onnx.load_from_string(buffer.getvalue())
    _strip_prefix(model, "inner.")
    return model


def _strip_prefix(model: onnx.ModelProto, prefix: str) -> None:
    renamed = {t.name: t.name[len(prefix) :] for t in model.graph.initializer if t.name.startswith(prefix)}
    for tensor in model.graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
    for node in model.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
