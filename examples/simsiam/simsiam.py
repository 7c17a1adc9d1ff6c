"""SimSiam on scikit-learn's digits with ONNX Runtime training, with and without StopGradient.

Chen & He, "Exploring Simple Siamese Representation Learning" (CVPR 2021), Figure 2: with
the stop-gradient on the target branch the l2-normalised output keeps a per-channel std
near 1/sqrt(d); without it the outputs collapse (std -> 0, kNN accuracy -> chance).

Here PyTorch only defines the networks and the augmentations (``networks.py``) and exports
the loss graph once. ``onnx_stopgrad.insert_stop_gradient`` puts StopGradient on the two
target tensors by name; ``onnx_stopgrad.training.generate_artifacts`` builds both artifact
sets (with the loss as the graph's output); ONNX Runtime trains both runs from the same
initial weights on the same augmented views. Each epoch prints, for both runs, the loss,
the std of the l2-normalised encoder output on held-out digits, and the 5-NN accuracy of
held-out digits against the clean training digits (clean queries, and augmented queries).
A plot goes to ``out/simsiam/simsiam_collapse.png``.

    python examples/simsiam/simsiam.py            # under a minute on 2 CPU cores
    python examples/simsiam/simsiam.py --smoke    # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for path in (str(HERE), str(REPO)):  # run from a checkout without `pip install -e .`
    if path not in sys.path:
        sys.path.insert(0, path)

import networks
import onnx
import torch

from onnx_stopgrad import insert_stop_gradient, session_options
from onnx_stopgrad.training import ArtifactsReport, generate_artifacts, load

__all__ = [
    "Digits",
    "Run",
    "build",
    "evaluate",
    "gradient_difference",
    "knn_accuracy",
    "load_data",
    "main",
    "ort_gradients",
    "parse_args",
    "plot",
    "prepare",
    "run",
    "torch_gradients",
    "train_both",
    "verdict",
]  # fmt: skip

KNN_K = 5
CHANCE = 0.1
COLLAPSED_BELOW = 0.2  # std < 0.2 / sqrt(d): collapsed
HEALTHY_ABOVE = 0.5  # std > 0.5 / sqrt(d): not collapsed


@dataclass(frozen=True)
class Digits:
    """Pixels scaled to 0..1; a fixed split, and one fixed augmentation of the test images."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_test_augmented: np.ndarray


@dataclass
class Run:
    """One training run and what was measured after every epoch (epoch 0: before training)."""

    name: str
    directory: Path
    report: ArtifactsReport
    loss: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    knn: list[float] = field(default_factory=list)
    knn_augmented: list[float] = field(default_factory=list)


def load_data(seed: int = 0, n_test: int = 500, n_train: int | None = None) -> Digits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:][:n_train]
    generator = torch.Generator().manual_seed(seed + 1)
    augmented = networks.augment(torch.from_numpy(x[test]), generator).numpy()
    return Digits(x[train], y[train], x[test], y[test], augmented)


def prepare(out: Path, seed: int = 0) -> tuple[Path, Path, onnx.ModelProto, networks.SimSiam]:
    """Export the loss graph (no stop), the same graph with stops, and the encoder.

    Returns (loss graph without stops, loss graph with stops, encoder model, the PyTorch net).
    """
    torch.manual_seed(seed)
    net = networks.SimSiam()
    plain = out / "simsiam_loss.onnx"
    networks.export_loss_graph(net, plain)
    stopped, report = insert_stop_gradient(str(plain), list(networks.TARGET_TENSORS))
    stopped_path = out / "simsiam_loss.stopgrad.onnx"
    onnx.save(stopped, str(stopped_path))
    for line in report.summary().splitlines():
        print(f"  {line}")
    encoder = networks.export_encoder(net, out / "simsiam_encoder.onnx")
    return plain, stopped_path, encoder, net


def torch_gradients(
    net: networks.SimSiam, view_a: np.ndarray, view_b: np.ndarray, detach: bool
) -> dict[str, np.ndarray]:
    """PyTorch autograd's gradients of the loss; ``detach``: SimSiam's ``z.detach()`` on the targets."""
    import copy

    model = networks.SimSiamLoss(copy.deepcopy(net))
    a, b = torch.from_numpy(view_a), torch.from_numpy(view_b)
    z_a, z_b = model.net.encoder(a), model.net.encoder(b)
    p_a, p_b = model.net.predictor(z_a), model.net.predictor(z_b)
    t_a, t_b = model.target_a(z_a), model.target_b(z_b)
    if detach:
        t_a, t_b = t_a.detach(), t_b.detach()
    norm = model.prediction_norm
    loss = -0.5 * ((norm(p_a) * t_b).sum(dim=1).mean() + (norm(p_b) * t_a).sum(dim=1).mean())
    loss.backward()
    return {name: param.grad.numpy() for name, param in model.named_parameters()}


def ort_gradients(
    directory: Path, view_a: np.ndarray, view_b: np.ndarray, names: list[str]
) -> dict[str, np.ndarray]:
    """The gradients ONNX Runtime's training model computes on one batch (initial weights)."""
    state, module, _ = open_artifacts(directory)
    module.train()
    module(view_a, view_b)
    return {name: np.array(state.parameters[name].grad, copy=True) for name in names}


def gradient_difference(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over all parameters, over the reference's largest gradient."""
    scale = max(float(np.abs(g).max()) for g in reference.values())
    return max(float(np.abs(ours[name] - g).max()) for name, g in reference.items()) / scale


def build(model: Path, directory: Path) -> ArtifactsReport:
    """Artifacts whose loss is the graph's own output (``loss=None``); AdamW."""
    return generate_artifacts(str(model), loss=None, optimizer="adamw", artifact_directory=directory)


def _options() -> Any:
    """One intra-op thread, no spinning: two runs alternate in one process on a small machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_artifacts(directory: Path) -> tuple[Any, Any, Any]:
    """``onnx_stopgrad.training.load`` (state, module, optimizer) with :func:`_options`."""
    return load(directory, options=_options())  # load() registers the StopGradient library


def _encoder_session(encoder: onnx.ModelProto, params: dict[str, np.ndarray]) -> Any:
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(encoder)
    for init in model.graph.initializer:
        init.CopyFrom(onnx.numpy_helper.from_array(params[init.name], init.name))
    options = session_options(_options())  # with the StopGradient library registered
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _normalise(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def knn_accuracy(bank: np.ndarray, labels: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
    """k-NN (cosine similarity, majority vote) accuracy of ``queries`` against ``bank``."""
    similarity = _normalise(queries) @ _normalise(bank).T
    nearest = np.argpartition(-similarity, KNN_K, axis=1)[:, :KNN_K]
    votes = labels[nearest]
    predicted = np.array([np.bincount(row, minlength=10).argmax() for row in votes])
    return float(np.mean(predicted == truth))


def evaluate(
    encoder: onnx.ModelProto, params: dict[str, np.ndarray], data: Digits
) -> tuple[float, float, float]:
    """(std of the l2-normalised held-out outputs, kNN accuracy, kNN accuracy of augmented queries).

    The std is taken per output channel over the held-out digits and averaged over channels,
    as in the paper (1/sqrt(d) for outputs spread uniformly on the sphere; 0 when collapsed).
    """
    session = _encoder_session(encoder, params)
    bank, test, augmented = (session.run(["embedding"], {"pixels": x})[0]
                             for x in (data.x_train, data.x_test, data.x_test_augmented))  # fmt: skip
    std = float(_normalise(test).std(axis=0).mean())
    return (std, knn_accuracy(bank, data.y_train, test, data.y_test),
            knn_accuracy(bank, data.y_train, augmented, data.y_test))  # fmt: skip


def _parameters(state: Any, names: list[str]) -> dict[str, np.ndarray]:
    return {name: np.array(state.parameters[name].data, copy=True) for name in names}


def _record(run: Run, encoder: onnx.ModelProto, state: Any, data: Digits, loss: float) -> None:
    names = [init.name for init in encoder.graph.initializer]
    std, knn, knn_aug = evaluate(encoder, _parameters(state, names), data)
    run.loss.append(loss)
    run.std.append(std)
    run.knn.append(knn)
    run.knn_augmented.append(knn_aug)


def train_both(
    runs: list[Run], encoder: onnx.ModelProto, data: Digits, *, epochs: int, batch_size: int,
    lr: float, seed: int = 0, echo: bool = True,
) -> None:  # fmt: skip
    """Train every run on the same augmented views, evaluating after each epoch."""
    loaded = []
    for run in runs:
        state, module, optimizer = open_artifacts(run.directory)
        optimizer.set_learning_rate(lr)
        loaded.append((state, module, optimizer))
        _record(run, encoder, state, data, float("nan"))  # epoch 0: no training loss yet
    inv_sqrt_d = networks.EMBED_DIM**-0.5
    if echo:
        print("       " + " | ".join(f"{'-- ' + run.name + ' --':^32}" for run in runs))
        print("epoch  " + " | ".join(f"{'loss':>7} {'std':>6} {'kNN':>6} {'kNN(aug)':>9}" for _ in runs))
        _echo_epoch(0, runs)
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.from_numpy(data.x_train)
    for epoch in range(1, epochs + 1):
        losses: list[list[float]] = [[] for _ in runs]
        for batch in torch.randperm(len(x_train), generator=generator).split(batch_size):
            if len(batch) < batch_size:
                continue  # full batches only: batch statistics need enough examples
            view_a = networks.augment(x_train[batch], generator).numpy()
            view_b = networks.augment(x_train[batch], generator).numpy()
            for (_, module, optimizer), run_losses in zip(loaded, losses, strict=True):
                module.train()
                run_losses.append(float(module(view_a, view_b)))
                optimizer.step()
                module.lazy_reset_grad()
        for (state, _, _), run, run_losses in zip(loaded, runs, losses, strict=True):
            _record(run, encoder, state, data, float(np.mean(run_losses)))
        if echo:
            _echo_epoch(epoch, runs)
    if echo:
        print(f"  (1/sqrt(d) = {inv_sqrt_d:.3f} for d = {networks.EMBED_DIM}; kNN chance = {CHANCE:.0%})")


def _echo_epoch(epoch: int, runs: list[Run]) -> None:
    cells = " | ".join(
        f"{'-' if np.isnan(run.loss[-1]) else f'{run.loss[-1]:.3f}':>7} "
        f"{run.std[-1]:>6.4f} {run.knn[-1]:>6.1%} {run.knn_augmented[-1]:>9.1%}"
        for run in runs
    )
    print(f"{epoch:>5}  {cells}", flush=True)


def plot(runs: list[Run], path: Path) -> None:
    """Loss, output std and kNN accuracy per epoch for every run, side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {0: "tab:blue", 1: "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, run in enumerate(runs):
        epochs = np.arange(len(run.std))
        colour = colours.get(i, None)
        axes[0].plot(epochs[1:], run.loss[1:], color=colour, label=run.name)
        axes[1].plot(epochs, run.std, color=colour, label=run.name)
        axes[2].plot(
            epochs, np.array(run.knn_augmented) * 100, color=colour, label=f"{run.name}, augmented queries"
        )
        axes[2].plot(
            epochs, np.array(run.knn) * 100, color=colour, linestyle=":", label=f"{run.name}, clean queries"
        )
    axes[0].set(title="training loss (negative cosine)", xlabel="epoch", ylim=(-1.02, 0.02))
    axes[1].axhline(networks.EMBED_DIM**-0.5, color="grey", linestyle="--", label="1/sqrt(d)")
    axes[1].set(title="std of l2-normalised output (held-out)", xlabel="epoch", ylim=(0, None))
    axes[2].axhline(CHANCE * 100, color="grey", linestyle="--", label="chance")
    axes[2].set(title=f"{KNN_K}-NN accuracy, held-out digits (%)", xlabel="epoch", ylim=(0, 100))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="center right")
    axes[2].legend(fontsize=7.5, loc="center right", framealpha=0.9)
    fig.suptitle("SimSiam on sklearn digits, trained by ONNX Runtime: with vs without StopGradient")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(stop: Run, no_stop: Run) -> list[str]:
    """What was measured, in words; the thresholds are stated, not tuned to the result."""
    inv = networks.EMBED_DIM**-0.5
    lines = []
    for run in (stop, no_stop):
        ratio = run.std[-1] / inv
        state = ("collapsed" if ratio < COLLAPSED_BELOW else "not collapsed" if ratio > HEALTHY_ABOVE
                 else "partly collapsed")  # fmt: skip
        lines.append(
            f"{run.name}: std {run.std[0]:.4f} -> {run.std[-1]:.4f} ({ratio:.2f} x 1/sqrt(d)): {state}; "
            f"kNN {run.knn[0]:.1%} -> {run.knn[-1]:.1%} (clean queries), "
            f"{run.knn_augmented[0]:.1%} -> {run.knn_augmented[-1]:.1%} "
            f"(augmented queries; chance {CHANCE:.0%})"
        )
    collapse_without = no_stop.std[-1] / inv < COLLAPSED_BELOW
    healthy_with = stop.std[-1] / inv > HEALTHY_ABOVE
    if collapse_without and healthy_with:
        lines.append("Result: reproduced. Without the stop the outputs collapse; with it they do not.")
    else:
        lines.append(
            f"Result: NOT reproduced as stated (collapse without stop: {collapse_without}, "
            f"healthy with stop: {healthy_with})."
        )
    lines.append(
        f"(collapsed: final std < {COLLAPSED_BELOW} x 1/sqrt(d); "
        f"not collapsed: > {HEALTHY_ABOVE} x 1/sqrt(d))"
    )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "simsiam")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="3 epochs on 512 digits (a few seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 3
    return args


def run(args: argparse.Namespace) -> list[Run]:
    """The whole experiment; returns the two runs (with stop, without stop)."""
    started = time.perf_counter()
    torch.set_num_threads(1)  # augmentations only; idle torch threads would compete with ORT's
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.seed, n_train=512 if args.smoke else None)
    print(
        f"SimSiam on sklearn digits: {len(data.x_train)} training and {len(data.x_test)} held-out images, "
        f"d = {networks.EMBED_DIM}, batch {args.batch_size}, AdamW lr {args.lr}, {args.epochs} epochs."
    )

    print(
        "\n[1/4] Exporting the loss graph from PyTorch; stopping the gradient at "
        f"{', '.join(networks.TARGET_TENSORS)} with onnx_stopgrad.insert_stop_gradient:"
    )
    plain, stopped, encoder, net = prepare(out, args.seed)

    print("\n[2/4] Building ONNX Runtime training artifacts (the loss is the graph output):")
    runs = []
    for name, model in (("with stop", stopped), ("without stop", plain)):
        report = build(model, out / ("artifacts_" + name.replace(" ", "_")))
        runs.append(Run(name, report.directory, report))
        print(
            f"  {name:<13} {len(report.trainable)} parameters train, {len(report.frozen)} frozen, "
            f"{report.gradient_nodes} gradient nodes"
        )
    removed = runs[1].report.gradient_nodes - runs[0].report.gradient_nodes
    print(f"  the two stops removed {removed} gradient nodes (the backward pass through the target branches)")
    generator = torch.Generator().manual_seed(args.seed + 2)
    batch = torch.from_numpy(data.x_train[: args.batch_size])
    views = (networks.augment(batch, generator).numpy(), networks.augment(batch, generator).numpy())
    reference = {detach: torch_gradients(net, *views, detach) for detach in (True, False)}
    ort = [ort_gradients(run.directory, *views, list(reference[True])) for run in runs]
    print("  check, one batch: ONNX Runtime's gradients vs PyTorch autograd (max difference / max gradient):")
    print(
        f"    with stop    vs PyTorch with z.detach():    {gradient_difference(ort[0], reference[True]):.1e}"
    )
    print(
        f"    without stop vs PyTorch without detach:     {gradient_difference(ort[1], reference[False]):.1e}"
    )
    detach_effect = gradient_difference(reference[True], reference[False])
    print(f"    (with detach vs without, in PyTorch:        {detach_effect:.1e})")

    print("\n[3/4] Training both runs with ONNX Runtime (same initial weights, same views):")
    train_both(
        runs, encoder, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )

    print("\n[4/4] Result (measured):")
    png = out / "simsiam_collapse.png"
    plot(runs, png)
    for line in verdict(runs[0], runs[1]):
        print(f"  {line}")
    if args.smoke:
        print(
            f"  (smoke run: {args.epochs} epochs on {len(data.x_train)} digits "
            "is too short to judge the collapse)"
        )
    print(f"  plot: {png}")
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    return runs


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
