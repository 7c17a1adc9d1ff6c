"""References for the BatchNorm/Dropout mode tests: PyTorch in float64, ORT through
``onnx_stopgrad.training.load`` with :class:`RunningStatistics`, and a tolerant compare."""

from __future__ import annotations

import numpy as np
import torch
from training_reference import adamw_steps, first_of

from onnx_stopgrad.training import RunningStatistics, load

__all__ = ["data", "ort_steps", "relative", "set_modes", "torch_steps"]


def relative(actual: np.ndarray, expected: np.ndarray, floor: float) -> float:
    """Largest error relative to the largest expected entry (at least ``floor``)."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), floor))


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 3, 16, 16)).astype(np.float32), rng.integers(0, 5, 4).astype(np.int64)


def set_modes(module, head_training: bool):
    """The backbone in eval mode, the head (everything after the stop) as given."""
    module.train(head_training)
    for name in module.backbone:
        module.get_submodule(name).eval()
    return module


def torch_steps(module, x, label, trainable, steps):
    """Loss and gradients of the first step; weights and buffers after ``steps`` AdamW
    steps; all in float64."""
    module = module.double()

    def loss_of():
        return torch.nn.functional.cross_entropy(
            module(torch.from_numpy(x).double()), torch.from_numpy(label)
        )

    first = first_of(adamw_steps(dict(module.named_parameters()), loss_of, steps, trainable))
    return first, {n: t.detach().numpy().copy() for n, t in module.state_dict().items()}


def ort_steps(directory, x, label, steps):
    """The same with the artifacts; running statistics copied back after every step."""
    state, module, optimizer = load(directory)
    running = RunningStatistics.of(directory)
    module.train()
    first = None
    for _ in range(steps):
        outputs = module(x, label)
        running.update(state, module, outputs)
        loss = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        if first is None:
            grads = {n: p.grad.copy() for n, p in state.parameters if p.requires_grad}
            first = (float(np.asarray(loss)), grads)
        optimizer.step()
        module.lazy_reset_grad()
    state.save_checkpoint(state, str(directory / "checkpoint"), include_optimizer_state=False)
    return first, state
