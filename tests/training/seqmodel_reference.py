"""Train a real architecture in ORT and in PyTorch with ``.detach()`` at the same place; compare.

The PyTorch reference detaches a module's output with a forward hook (:func:`detach_output`);
the ONNX model is exported from the same module with the hook active, so the export has a
StopGradient where PyTorch detaches. Both take the same AdamW steps (ORT's defaults).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from training_reference import adamw_steps

__all__ = [
    "Run",
    "assert_same_training",
    "cross_entropy",
    "detach_output",
    "ort_steps",
    "perturb",
    "torch_steps",
]

GRAD_RTOL = 1e-5  # relative to the largest entry of the reference gradient ...
#: ... or to this fraction of the step's largest gradient entry, for gradients that are zero up
#: to float32 rounding (attention's key bias: softmax ignores what is added to every key).
ZERO_GRAD = 1e-4
PARAM_ATOL = 1e-4  # AdamW divides by sqrt(v): float32 noise in the gradients moves weights by ~lr * 1e-4


def detach_output(module: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Detach what ``module`` returns (its first element when it returns a tuple)."""

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> object:
        if isinstance(output, tuple):
            return (output[0].detach(), *output[1:])
        return output.detach()  # type: ignore[attr-defined]

    return module.register_forward_hook(hook)


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add distinct noise to every parameter: exporters merge initializers that are equal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labels != -100, class axis last (how Hugging Face models compute their loss)."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100)


@dataclass
class Run:
    """Losses and gradients of each step, and the parameters after each step."""

    losses: list[float]
    grads: list[dict[str, np.ndarray]]
    params: list[dict[str, np.ndarray]]


def torch_steps(module: torch.nn.Module, inputs: list[np.ndarray], labels: np.ndarray, steps: int) -> Run:
    """``steps`` AdamW steps of ``module`` (detach hooks active) on the crossentropy loss."""
    module = copy.deepcopy(module)
    params = dict(module.named_parameters())
    run = Run([], [], [])

    def loss_of():
        return cross_entropy(module(*[torch.from_numpy(a) for a in inputs]), torch.from_numpy(labels))

    for loss, grads in adamw_steps(params, loss_of, steps):
        run.losses.append(loss)
        run.grads.append(grads)
        run.params.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return run


def ort_steps(directory: Path, inputs: list[np.ndarray], labels: np.ndarray, steps: int) -> Run:
    """The same with onnx_stopgrad.training.load; ``params`` holds every checkpoint parameter."""
    from onnx_stopgrad.training import load

    state, module, optimizer = load(directory)
    module.train()
    names = [name for name, _ in state.parameters]
    trainable = [name for name in names if state.parameters[name].requires_grad]
    run = Run([], [], [])
    for _ in range(steps):
        run.losses.append(float(np.asarray(module(*inputs, labels))))
        run.grads.append({n: state.parameters[n].grad.copy() for n in trainable})
        optimizer.step()
        module.lazy_reset_grad()
        run.params.append({n: state.parameters[n].data.copy() for n in names})
    return run


def assert_same_training(
    ours: Run, reference: Run, trainable: set[str], initial: dict[str, np.ndarray]
) -> None:
    """Loss and every gradient to 1e-5 relative at each step, the same trainable set, the
    parameters after each step to 1e-4, and every frozen tensor bit for bit as it started."""
    for step, (loss, expected) in enumerate(zip(ours.losses, reference.losses, strict=True), 1):
        assert abs(loss - expected) <= 1e-5 * abs(expected), f"step {step}: loss {loss} vs {expected}"
    for step, (grads, expected) in enumerate(zip(ours.grads, reference.grads, strict=True), 1):
        assert set(grads) == set(expected) == trainable, f"step {step}: trainable sets differ"
        floor = ZERO_GRAD * max(np.abs(g).max() for g in expected.values())
        for name, want in expected.items():
            error = np.abs(grads[name] - want).max() / max(np.abs(want).max(), floor)
            assert error <= GRAD_RTOL, f"step {step}: gradient of {name} off by {error:.3g} (relative)"
    for step, (params, expected) in enumerate(zip(ours.params, reference.params, strict=True), 1):
        assert set(params) == set(initial), "the checkpoint holds other parameters than the model"
        for name, start in initial.items():
            if name in trainable:
                np.testing.assert_allclose(
                    params[name], expected[name], rtol=0, atol=PARAM_ATOL, err_msg=f"step {step}: {name}"
                )
                assert not np.array_equal(params[name], start), f"step {step}: {name} did not move"
            else:
                np.testing.assert_array_equal(params[name], start, err_msg=f"step {step}: frozen {name}")
