"""Five models that block gradients, each as a PyTorch module and as ONNX built two ways.

Every case is a torch module whose ``forward(*inputs, stop)`` calls ``stop(t)`` where a
gradient must not flow. The reference runs it with ``stop = Tensor.detach``. The ONNX
models carry a StopGradient node at the same places: ``by_helper`` builds it with
onnx.helper from the module's weights (same names), ``by_export`` runs
``torch.onnx.export`` with ``stop`` emitting the node.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION

__all__ = ["CASES", "Case", "StopForExport", "by_export", "by_helper", "detach", "export_torchscript"]

B = 4  # batch


def detach(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


class StopForExport(torch.autograd.Function):
    """Emits the StopGradient node in TorchScript exports (gradients blocked in torch too)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return torch.zeros_like(grad)

    @staticmethod
    def symbolic(g, x):  # type: ignore[no-untyped-def]
        return g.op(f"{DOMAIN}::{OP_TYPE}", x)


class MLP(torch.nn.Module):
    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, n_hidden)
        self.fc2 = torch.nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class Backbone(torch.nn.Module):
    """Frozen pretrained backbone, trainable head (crossentropy)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.head = MLP(6, 16, 8), torch.nn.Linear(8, 3)

    def forward(self, x, stop=detach):
        return self.head(stop(torch.relu(self.backbone(x))))


class TargetNetwork(torch.nn.Module):
    """y = Q(s) - 0.9 * stop(Q(s')) with one shared Q (mse against the reward)."""

    def __init__(self) -> None:
        super().__init__()
        self.q = MLP(6, 16, 1)

    def forward(self, s, s_next, stop=detach):
        return self.q(s) - 0.9 * stop(self.q(s_next))


class AuxHead(torch.nn.Module):
    """The auxiliary head reads the trunk through a stop; the main head does not."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.main, self.aux = (
            torch.nn.Linear(6, 16),
            torch.nn.Linear(16, 3),
            torch.nn.Linear(16, 3),
        )

    def forward(self, x, stop=detach):
        h = torch.relu(self.trunk(x))
        return self.main(h) + self.aux(stop(h))


class SharedWeight(torch.nn.Module):
    """One weight read twice: directly, and through a stop."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, x, x2, stop=detach):
        return self.lin(x) + torch.nn.functional.linear(torch.tanh(x2), stop(self.lin.weight))


class GanDiscriminator(torch.nn.Module):
    """Discriminator step on a detached generator sample (bce on real/fake logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.gen, self.disc = MLP(4, 16, 6), MLP(6, 16, 1)

    def forward(self, z, real, stop=detach):
        return torch.cat([self.disc(real), self.disc(stop(self.gen(z)))], dim=0)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], torch.nn.Module]
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    loss: str  # mse / crossentropy / bce
    expected_trainable: frozenset[str]
    #: Module prefixes whose forward nodes get no gradient node.
    stopped_modules: tuple[str, ...]
    output_shape: tuple[int, ...]

    def inputs(self, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(s).astype(np.float32) for s in self.input_shapes]

    def label(self, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.loss == "crossentropy":
            return rng.integers(0, self.output_shape[-1], size=self.output_shape[:-1]).astype(np.int64)
        if self.loss == "bce":
            return (rng.random(self.output_shape) > 0.5).astype(np.float32)
        return rng.standard_normal(self.output_shape).astype(np.float32)


def _all(module: torch.nn.Module, *prefixes: str) -> frozenset[str]:
    return frozenset(n for n, _ in module.named_parameters() if n.startswith(prefixes))


CASES = {
    c.name: c
    for c in [
        Case("backbone", Backbone, ("x",), ((B, 6),), "crossentropy",
             _all(Backbone(), "head."), ("backbone",), (B, 3)),
        Case("target_network", TargetNetwork, ("s", "s_next"), ((B, 6), (B, 6)), "mse",
             _all(TargetNetwork(), "q."), ("q_next",), (B, 1)),
        Case("aux_head", AuxHead, ("x",), ((B, 6),), "mse",
             _all(AuxHead(), ""), (), (B, 3)),
        Case("shared_weight", SharedWeight, ("x", "x2"), ((B, 6), (B, 6)), "mse",
             _all(SharedWeight(), ""), ("tanh2",), (B, 3)),
        Case("gan_discriminator", GanDiscriminator, ("z", "real"), ((B, 4), (B, 6)), "bce",
             _all(GanDiscriminator(), "disc."), ("gen",), (2 * B, 1)),
    ]
}  # fmt: skip


# --- ONNX by hand -------------------------------------------------------------------


class _Builder:
    """A tiny graph builder: each method adds one node and returns its output name."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.params = {n: p.detach().numpy() for n, p in module.named_parameters()}
        self.used: set[str] = set()

    def op(self, op_type: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        self.used.update(i for i in inputs if i in self.params)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, domain=domain, **attrs))
        return out

    def linear(self, x: str, prefix: str, name: str) -> str:
        return self.op("Gemm", [x, f"{prefix}.weight", f"{prefix}.bias"], name, transB=1)

    def mlp(self, x: str, prefix: str, name: str) -> str:
        h = self.op("Relu", [self.linear(x, f"{prefix}.fc1", f"{name}/fc1")], f"{name}/relu")
        return self.linear(h, f"{prefix}.fc2", f"{name}/fc2")

    def stop(self, x: str, name: str) -> str:
        return self.op(OP_TYPE, [x], name, domain=DOMAIN)

    def const(self, value: float, name: str) -> str:
        self.nodes.append(
            helper.make_node(
                "Constant", [], [name], name=name, value=numpy_helper.from_array(np.float32(value))
            )
        )
        return name


def by_helper(case: Case, module: torch.nn.Module) -> onnx.ModelProto:
    """The case's ONNX model written by hand with onnx.helper (IR version of the onnx package)."""
    b = _Builder(module)
    x = case.input_names
    if case.name == "backbone":
        feats = b.op("Relu", [b.mlp(x[0], "backbone", "backbone")], "backbone/out_relu")
        y = b.linear(b.stop(feats, "stop"), "head", "head")
    elif case.name == "target_network":
        q_next = b.stop(b.mlp(x[1], "q", "q_next"), "stop")
        scaled = b.op("Mul", [q_next, b.const(0.9, "gamma")], "discount")
        y = b.op("Sub", [b.mlp(x[0], "q", "q_now"), scaled], "td")
    elif case.name == "aux_head":
        h = b.op("Relu", [b.linear(x[0], "trunk", "trunk")], "trunk/relu")
        y = b.op("Add", [b.linear(h, "main", "main"), b.linear(b.stop(h, "stop"), "aux", "aux")], "sum")
    elif case.name == "shared_weight":
        direct = b.linear(x[0], "lin", "direct")
        stopped = b.op(
            "Gemm", [b.op("Tanh", [x[1]], "tanh2"), b.stop("lin.weight", "stop")], "reuse", transB=1
        )
        y = b.op("Add", [direct, stopped], "sum")
    elif case.name == "gan_discriminator":
        fake = b.stop(b.mlp(x[0], "gen", "gen"), "stop")
        y = b.op(
            "Concat", [b.mlp(x[1], "disc", "disc_real"), b.mlp(fake, "disc", "disc_fake")], "cat", axis=0
        )
    else:
        raise KeyError(case.name)
    graph = helper.make_graph(
        b.nodes,
        case.name,
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
            for n, s in zip(x, case.input_shapes, strict=True)
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(case.output_shape))],
        [numpy_helper.from_array(v, n) for n, v in b.params.items() if n in b.used],
    )
    next(n for n in graph.node if y in n.output).output[:] = ["y"]
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    )


def export_torchscript(module: torch.nn.Module, args: tuple, input_names: list[str]) -> onnx.ModelProto:
    """torch.onnx.export with the TorchScript exporter, in training mode, no constant folding."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, args, buffer, input_names=input_names, output_names=["y"], dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False, custom_opsets={DOMAIN: OPSET_VERSION}, opset_version=17,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def by_export(case: Case, module: torch.nn.Module) -> onnx.ModelProto:
    """The case's ONNX model from torch.onnx.export (TorchScript exporter, training mode)."""
    args = tuple(torch.from_numpy(a) for a in case.inputs())

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *inputs):
            return self.inner(*inputs, stop=StopForExport.apply)

    model = export_torchscript(Wrapped().train(), args, list(case.input_names))
    prefix = "inner."
    for tensor in model.graph.initializer:  # Wrapped adds "inner." to every parameter
        if tensor.name.startswith(prefix):
            old = tensor.name
            tensor.name = old[len(prefix) :]
            for node in model.graph.node:
                node.input[:] = [tensor.name if i == old else i for i in node.input]
    return model
