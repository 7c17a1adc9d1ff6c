"""PyTorch modules that block gradients with ``detach``, each returning a scalar loss.

Every case knows its inputs and where its StopGradient nodes must sit (the op type of
the node feeding each stop), so tests can check the export's structure, its values and,
with ONNX Runtime training, its gradients against PyTorch autograd.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn

#: torch.onnx's dynamo exporter needs onnxscript; the TorchScript one does not.
needs_onnxscript = pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None, reason="dynamo exporter needs onnxscript"
)
EXPORTERS = ("torchscript", pytest.param("dynamo", marks=needs_onnxscript))


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    diff = a - b
    return (diff * diff).mean()


def _mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class FrozenBackbone(nn.Module):
    """A pretrained backbone used as a fixed feature extractor; only the head learns."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(_mlp(6, 16, 12), nn.ReLU())
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x).detach()
        return _mse(self.head(features), y)


class TargetNetwork(nn.Module):
    """DQN-style TD loss: one Q network, its bootstrap target detached."""

    def __init__(self) -> None:
        super().__init__()
        self.q = _mlp(5, 16, 4)

    def forward(
        self, s: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, s_next: torch.Tensor
    ) -> torch.Tensor:
        q_taken = (self.q(s) * action).sum(dim=1)
        target = reward + 0.9 * self.q(s_next).amax(dim=1).detach()
        return _mse(q_taken, target)


class SimSiam(nn.Module):
    """SimSiam's symmetric negative-cosine loss with stop-gradient on the projections."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _mlp(8, 16, 8)
        self.predictor = _mlp(8, 6, 8)

    @staticmethod
    def _neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = z.detach()
        p = p / torch.sqrt((p * p).sum(dim=1, keepdim=True))
        z = z / torch.sqrt((z * z).sum(dim=1, keepdim=True))
        return -(p * z).sum(dim=1).mean()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.encoder(x1), self.encoder(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * self._neg_cosine(p1, z2) + 0.5 * self._neg_cosine(p2, z1)


class GanDiscriminatorStep(nn.Module):
    """Least-squares GAN discriminator loss on a detached generator sample."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Sequential(_mlp(4, 12, 6), nn.Tanh())
        self.discriminator = _mlp(6, 10, 1)

    def forward(self, noise: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake = self.generator(noise).detach()
        real_score = self.discriminator(real)
        fake_score = self.discriminator(fake)
        return _mse(real_score, torch.ones_like(real_score)) + (fake_score * fake_score).mean()


class AuxiliaryHead(nn.Module):
    """An auxiliary probe trained on the trunk's features without changing the trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(_mlp(6, 16, 10), nn.ReLU())
        self.head = nn.Linear(10, 2)
        self.aux_head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_aux: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x)
        main = _mse(self.head(features), y)
        aux = _mse(self.aux_head(features.detach()), y_aux)
        return main + 0.5 * aux


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    #: op type producing each stop's input, sorted (dead detaches are not counted).
    stopped_producers: tuple[str, ...]
    #: parameter-name prefixes that only reach the loss through a stop.
    frozen_prefixes: tuple[str, ...]


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def _one_hot(gen: torch.Generator, rows: int, classes: int) -> torch.Tensor:
    index = torch.randint(0, classes, (rows,), generator=gen)
    return nn.functional.one_hot(index, classes).to(torch.float32)


CASES: tuple[Case, ...] = (
    Case(
        "frozen_backbone",
        FrozenBackbone,
        lambda g: (_randn(g, 7, 6), _randn(g, 7, 3)),
        ("Relu",),
        ("backbone.",),
    ),
    Case(
        "target_network",
        TargetNetwork,
        lambda g: (_randn(g, 9, 5), _one_hot(g, 9, 4), _randn(g, 9), _randn(g, 9, 5)),
        ("ReduceMax",),
        (),
    ),
    Case(
        "simsiam",
        SimSiam,
        lambda g: (_randn(g, 8, 8), _randn(g, 8, 8)),
        ("Gemm", "Gemm"),
        (),
    ),
    Case(
        "gan_discriminator",
        GanDiscriminatorStep,
        lambda g: (_randn(g, 6, 4), _randn(g, 6, 6)),
        ("Tanh",),
        ("generator.",),
    ),
    Case(
        "auxiliary_head",
        AuxiliaryHead,
        lambda g: (_randn(g, 5, 6), _randn(g, 5, 2), _randn(g, 5, 3)),
        ("Relu",),
        (),
    ),
)


def build(case: Case, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The case's module (seeded weights) and inputs."""
    torch.manual_seed(seed)
    module = case.make()
    return module, case.inputs(torch.Generator().manual_seed(seed + 1))
