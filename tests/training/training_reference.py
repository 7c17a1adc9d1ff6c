"""PyTorch references: the loss, gradients and AdamW steps ORT must reproduce."""

from __future__ import annotations

import numpy as np
import torch
from artifact_counts import backward_nodes

__all__ = ["ORT_ADAMW", "adamw_steps", "first_of", "ort_run", "ort_without_stops", "torch_loss", "torch_run"]

#: ORT 1.19's AdamW as generate_artifacts builds it (onnxblock.optim.AdamW defaults; the
#: optimizer model's default learning rate). adam_mode=1: HF/transformers semantics.
ORT_ADAMW = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0}


def torch_loss(kind: str, y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return torch.nn.functional.mse_loss(y, label)
    if kind == "crossentropy":
        return torch.nn.functional.cross_entropy(y, label)
    if kind == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(y, label)
    raise KeyError(kind)


def _adamw_hf_step(params, grads, state, step, lr, betas, eps, weight_decay):
    """transformers.AdamW (correct_bias=True): what ORT's AdamWOptimizer with adam_mode=1 does."""
    b1, b2 = betas
    for name, p in params.items():
        m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
        g = grads[name]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[name] = (m, v)
        step_size = lr * (1 - b2**step) ** 0.5 / (1 - b1**step)
        p -= step_size * m / (v.sqrt() + eps)
        if weight_decay:
            p -= lr * weight_decay * p


def adamw_steps(params, loss_of, steps, trainable=None):
    """PyTorch's side of ORT's AdamW: ``steps`` steps on ``loss_of()``, yielding each step's
    loss and gradients once its update is applied. ``trainable`` names the parameters that
    train (their ``requires_grad`` is set); by default, those that get a gradient."""
    if trainable is not None:
        for name, p in params.items():
            p.requires_grad_(name in trainable)
    state: dict = {}
    for step in range(1, steps + 1):
        for p in params.values():
            p.grad = None
        loss = loss_of()
        loss.backward()
        names = trainable if trainable is not None else [n for n, p in params.items() if p.grad is not None]
        grads = {n: params[n].grad.detach().clone() for n in names}
        with torch.no_grad():
            _adamw_hf_step({n: params[n] for n in names}, grads, state, step, **ORT_ADAMW)
        yield loss.item(), {n: g.numpy() for n, g in grads.items()}


def first_of(steps):
    """The first item of ``adamw_steps(...)``, after running every step."""
    first = next(steps)
    for _ in steps:
        pass
    return first


def torch_run(module, case, inputs, label, trainable, steps=3):
    """(loss, {name: grad}) of the first step, and {name: param} after ``steps`` AdamW steps."""
    params = dict(module.named_parameters())

    def loss_of():
        return torch_loss(case.loss, module(*[torch.from_numpy(a) for a in inputs]), torch.from_numpy(label))

    first = first_of(adamw_steps(params, loss_of, steps, trainable))
    return first, {n: params[n].detach().numpy().copy() for n in trainable}


def ort_run(directory, inputs, label, steps=3):
    """The same with onnx_stopgrad.training.load (op library registered)."""
    from onnx_stopgrad.training import load

    state, module, optimizer = load(directory)
    assert abs(optimizer.get_learning_rate() - ORT_ADAMW["lr"]) < 1e-9
    module.train()
    trainable = [name for name, param in state.parameters if param.requires_grad]
    first = None
    for _ in range(steps):
        loss = module(*inputs, label)
        if first is None:
            first = (float(np.asarray(loss)), {n: state.parameters[n].grad.copy() for n in trainable})
        optimizer.step()
        module.lazy_reset_grad()
    return first, {n: state.parameters[n].data.copy() for n in trainable}


def ort_without_stops(model, requires_grad, loss, directory) -> int:
    """ORT's own generate_artifacts on ``model`` with every stop removed by
    onnx_stopgrad.remove_stop_gradient; returns :func:`backward_nodes` of the result."""
    import copy

    from onnxruntime.training import artifacts

    from onnx_stopgrad import remove_stop_gradient

    plain, _ = remove_stop_gradient(copy.deepcopy(model))
    plain.ir_version = min(plain.ir_version, 10)
    losses = {
        "crossentropy": artifacts.LossType.CrossEntropyLoss,
        "mse": artifacts.LossType.MSELoss,
        "bce": artifacts.LossType.BCEWithLogitsLoss,
    }
    directory.mkdir()
    artifacts.generate_artifacts(
        plain, requires_grad=list(requires_grad), loss=losses[loss],
        optimizer=artifacts.OptimType.AdamW, artifact_directory=directory,
    )  # fmt: skip
    return backward_nodes(directory)


def assert_same_artifacts(ours, theirs, differing: tuple[str, ...] = ()) -> None:
    """Two artifact folders hold the same files, graphs (up to onnxblock's name counters;
    but the models named in ``differing``) and checkpoint parameters, bit for bit."""
    import os
    import re

    import onnx
    from onnxruntime.training.api import CheckpointState

    def unnumbered(graph) -> str:  # onnxblock numbers new names with a process-wide counter
        return re.sub(r"::\d+", "::#", str(graph))

    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
    for name in sorted(os.listdir(ours)):
        if name.endswith(".onnx") and name not in differing:
            mine, other = onnx.load(os.path.join(ours, name)), onnx.load(os.path.join(theirs, name))
            assert unnumbered(mine.graph) == unnumbered(other.graph), name
            assert mine.ir_version <= 10
    states = [CheckpointState.load_checkpoint(os.path.join(d, "checkpoint")) for d in (ours, theirs)]
    params = [{name: (p.data, p.requires_grad) for name, p in s.parameters} for s in states]
    assert params[0].keys() == params[1].keys()
    for name, (data, requires_grad) in params[0].items():
        np.testing.assert_array_equal(data, params[1][name][0])
        assert requires_grad == params[1][name][1]
