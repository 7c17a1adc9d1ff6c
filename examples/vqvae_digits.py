"""A VQ-VAE on scikit-learn's digits, trained with ONNX Runtime, next to the same run in PyTorch.

The quantizer picks the nearest codebook vector (ArgMin over distances, Gather) and
passes the gradient straight through with PyTorch's own idiom ``z + (e - z).detach()``;
the loss adds the codebook and commitment terms ``|stop(z) - e|^2 + beta |z - stop(e)|^2``.
``onnx_stopgrad.torch.export`` keeps every ``detach`` as a StopGradient, so ONNX Runtime
trains exactly what PyTorch trains. The example

1. exports the model (its output is the loss) with the detaches kept,
2. builds training artifacts (L1 loss against 0, which is the loss itself),
3. trains the same steps with ONNX Runtime and with PyTorch (AdamW as ONNX Runtime
   defines it), and prints both loss curves and the codebook vectors in use.

Runs in seconds; ``--steps`` changes the length. Outputs go to ``out/vqvae_digits/``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import torch

from onnx_stopgrad.torch import export
from onnx_stopgrad.training import generate_artifacts, load

__all__ = ["BATCH", "VQVAE", "Curves", "main", "run"]

BATCH = 64
BETA = 0.25
#: ONNX Runtime 1.19's AdamW as generate_artifacts builds it (adam_mode=1, transformers' AdamW).
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-6


class VQVAE(torch.nn.Module):
    """64 pixels -> 8-d latent -> nearest of 16 codes -> 64 pixels; returns the training loss."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
        self.codebook = torch.nn.Parameter(torch.randn(16, 8) * 0.5)
        self.decoder = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 64))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        distances = (z * z).sum(1, keepdim=True) - 2 * z @ self.codebook.t() + (self.codebook**2).sum(1)
        return torch.argmin(distances, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        e = self.codebook[self.codes(x)]
        z_q = z + (e - z).detach()  # straight-through: forward e, gradient to z
        reconstruction = ((self.decoder(z_q) - x) ** 2).mean()
        codebook = ((z.detach() - e) ** 2).mean()
        commitment = ((z - e.detach()) ** 2).mean()
        return (reconstruction + codebook + BETA * commitment).reshape(1)


def _batches(x: np.ndarray, steps: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [x[rng.choice(len(x), BATCH, replace=False)] for _ in range(steps)]


def _torch_adamw_step(params: list[torch.Tensor], state: dict, step: int) -> None:
    """transformers' AdamW (bias correction in the step size): what ORT's AdamW does."""
    b1, b2 = BETAS
    with torch.no_grad():
        for i, p in enumerate(params):
            m, v = state.setdefault(i, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.sub_(LR * (1 - b2**step) ** 0.5 / (1 - b1**step) * m / (v.sqrt() + EPS))


@dataclass(frozen=True)
class Curves:
    onnxruntime: list[float]
    pytorch: list[float]
    codes_used: int


def run(out: Path, steps: int = 300) -> Curves:
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0).astype(np.float32)
    torch.manual_seed(0)
    model = VQVAE()
    with torch.no_grad():  # codes start at encoded digits, so that many of them get used
        start = np.random.default_rng(1).choice(len(x), len(model.codebook), replace=False)
        model.codebook.copy_(model.encoder(torch.from_numpy(x[start])))
    reference = copy.deepcopy(model)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(
            model, (torch.from_numpy(x[:BATCH]),), out / "vqvae.onnx",
            input_names=["x"], output_names=["loss"], training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False, opset_version=17,
        )  # fmt: skip
    generate_artifacts(
        out / "vqvae.onnx",
        loss="l1",
        optimizer="adamw",
        artifact_directory=out / "artifacts",
        measure_removed=False,
    )
    state, module, optimizer = load(out / "artifacts")
    module.train()
    zero = np.zeros((1,), np.float32)  # |loss - 0| is the loss: it is never negative
    params = list(reference.parameters())
    adam: dict = {}
    ort_curve, torch_curve = [], []
    for step, batch in enumerate(_batches(x, steps), start=1):
        ort_curve.append(float(np.asarray(module(batch, zero))))
        optimizer.step()
        module.lazy_reset_grad()
        for p in params:
            p.grad = None
        loss = reference(torch.from_numpy(batch))
        loss.sum().backward()
        _torch_adamw_step(params, adam, step)
        torch_curve.append(loss.item())
    codebook = torch.from_numpy(state.parameters["codebook"].data)
    trained = copy.deepcopy(reference)
    with torch.no_grad():
        trained.codebook.copy_(codebook)
        used = len(set(trained.codes(torch.from_numpy(x)).tolist()))
    return Curves(ort_curve, torch_curve, used)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "vqvae_digits")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    curves = run(args.out, args.steps)
    print("step   onnxruntime   pytorch")
    for step in sorted({0, len(curves.pytorch) // 4, len(curves.pytorch) // 2, len(curves.pytorch) - 1}):
        print(f"{step + 1:4d}   {curves.onnxruntime[step]:11.5f}   {curves.pytorch[step]:7.5f}")
    print(f"codebook vectors in use after training (PyTorch encoder): {curves.codes_used} of 16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
