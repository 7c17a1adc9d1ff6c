"""Fine-tune a pretrained model's head behind a StopGradient, with ONNX Runtime training.

What ``make demo`` runs. The model (``models/digits_mlp.onnx``) has a backbone pretrained
on scikit-learn's digits 0-4 and a fresh head for the digits 5-9. The demo

1. stops the gradient at the backbone output with the CLI (``onnx-stopgrad insert``),
2. builds training artifacts with ``onnx_stopgrad.training.generate_artifacts``: only the
   head's parameters train, no gradient node is built for the backbone,
3. fine-tunes the head on the digits 5-9 with ONNX Runtime training (progress bar),
4. prints the held-out accuracy before and after, and the step time with the stop and
   without it (the same model trained end to end).

Outputs go to ``out/finetune_digits/`` (``--out`` to change). ``--epochs`` and
``--timing-steps`` make it shorter; the functions are reused by tests/examples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import onnx

from onnx_stopgrad import session_options
from onnx_stopgrad.training import (
    ArtifactsReport,
    export_for_inference,
    generate_artifacts,
    is_gradient_node,
    load,
)
from onnx_stopgrad.training._count import GRADIENT_NODE_MARK

__all__ = [
    "BACKBONE_OUTPUT",
    "MODEL_PATH",
    "Digits",
    "accuracy",
    "build_artifacts",
    "finetune",
    "gradient_nodes",
    "insert_stop_with_cli",
    "load_digits_split",
    "main",
    "median_step_times",
    "parameters",
]

MODEL_PATH = REPO / "models" / "digits_mlp.onnx"
SPLIT_PATH = REPO / "models" / "digits_split.json"
BACKBONE_OUTPUT = "/backbone/output"  # documented in models/make_digits_model.py
FIRST_CLASS = 5  # the head predicts digit - 5


@dataclass(frozen=True)
class Digits:
    """The fine-tuning task: digits 5-9 as labels 0-4, pixels as float32 0..16."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split() -> Digits:
    """The committed split of scikit-learn's digits (no download: the data ships with it)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    split = json.loads(SPLIT_PATH.read_text())
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64) - FIRST_CLASS
    train, test = np.asarray(split["finetune_train"]), np.asarray(split["finetune_test"])
    return Digits(x[train], y[train], x[test], y[test])


def insert_stop_with_cli(model: Path, tensor: str, output: Path) -> str:
    """Run ``onnx-stopgrad insert MODEL --at TENSOR -o OUTPUT``; return what it printed."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    command = [sys.executable, "-m", "onnx_stopgrad", "insert", str(model), "--at", tensor, "-o", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"onnx-stopgrad insert failed: {done.stderr.strip()}")
    return done.stdout.strip()


def build_artifacts(model: Path, directory: Path, requires_grad: list[str] | None = None) -> ArtifactsReport:
    """Cross-entropy + AdamW artifacts; with ``requires_grad=None`` the stops decide."""
    return generate_artifacts(
        str(model), requires_grad=requires_grad, loss="crossentropy", optimizer="adamw",
        artifact_directory=directory,
    )  # fmt: skip


def accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` whose arg-max logit is ``y`` (ONNX Runtime, op library loaded)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), session_options(), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"pixels": x})[0]
    return float(np.mean(logits.argmax(axis=1) == y))


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):  # full batches only
        yield order[start : start + batch_size]


def finetune(
    directory: Path, data: Digits, *, epochs: int, batch_size: int = 32, lr: float = 1e-2,
    seed: int = 0, progress: bool = True,
) -> tuple[Any, Any, list[float]]:  # fmt: skip
    """Train with the artifacts in ``directory``; return (state, module, loss per epoch)."""
    from tqdm import tqdm

    state, module, optimizer = load(directory)
    optimizer.set_learning_rate(lr)
    rng = np.random.default_rng(seed)
    steps = epochs * (len(data.x_train) // batch_size)
    losses: list[float] = []
    with tqdm(
        total=steps, desc="fine-tuning the head", unit="step", disable=not progress, ncols=80, mininterval=0.2
    ) as bar:
        for _ in range(epochs):
            module.train()
            epoch_losses = []
            for batch in _batches(len(data.x_train), batch_size, rng):
                loss = module(data.x_train[batch], data.y_train[batch])
                optimizer.step()
                module.lazy_reset_grad()
                epoch_losses.append(float(loss))
                bar.update()
            losses.append(float(np.mean(epoch_losses)))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return state, module, losses


def parameters(state: Any, names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """Copies of the named parameters held by an ORT CheckpointState."""
    return {name: np.array(state.parameters[name].data, copy=True) for name in names}


def gradient_nodes(directory: Path) -> Counter[tuple[str, str]]:
    """The gradient nodes of ``directory``'s training model as (forward node, op type) counts.

    Gradient nodes as ``onnx_stopgrad.training.is_gradient_node`` defines them. ORT names
    them ``<forward node>_Grad/<op>_<i>`` with a per-model counter, so they are compared by
    forward node and op type. The loss block's node becomes ``<loss>``, the Sums adding up
    the gradients of a tensor read twice ``<sum of gradients>``.
    """
    model = onnx.load(str(directory / "training_model.onnx"), load_external_data=False)
    counts: Counter[tuple[str, str]] = Counter()
    for node in model.graph.node:
        if is_gradient_node(node):
            forward = node.name.split(GRADIENT_NODE_MARK)[0] if GRADIENT_NODE_MARK in node.name else ""
            label = "<loss>" if forward.startswith("onnx::") else forward or "<sum of gradients>"
            counts[(label, node.op_type)] += 1
    return counts


def median_step_times(
    directories: list[Path], data: Digits, *, batch_size: int = 32, steps: int = 200, warmup: int = 20
) -> list[float]:
    """Median seconds of one training step (forward, backward, AdamW) for each directory.

    The artifact sets take turns, one step each, so a change in machine load hits all alike.
    """
    loaded = [load(directory)[1:] for directory in directories]
    x, y = data.x_train[:batch_size], data.y_train[:batch_size]
    times: list[list[float]] = [[] for _ in directories]
    for step in range(warmup + steps):
        for (module, optimizer), samples in zip(loaded, times, strict=True):
            module.train()
            start = time.perf_counter()
            module(x, y)
            optimizer.step()
            module.lazy_reset_grad()
            if step >= warmup:
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def _describe(removed: Counter[tuple[str, str]]) -> list[str]:
    """One line per forward node: ``/backbone/backbone.2/Gemm: 2 Gemm, 1 ReduceSum``."""
    by_node: dict[str, list[str]] = {}
    for (forward, op_type), count in sorted(removed.items()):
        by_node.setdefault(forward, []).append(f"{count} {op_type}")
    return [f"{forward}: {', '.join(ops)}" for forward, ops in by_node.items()]


def _rel(path: Path) -> str:
    """``path`` relative to the current directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _say(step: str, text: str) -> None:
    print(f"\n[{step}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "finetune_digits", help="output folder")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--timing-steps", type=int, default=300, help="steps timed per variant")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits_split()
    print(
        f"Task: classify digits 5-9 ({len(data.x_train)} training, {len(data.x_test)} held-out images) "
        f"with {_rel(MODEL_PATH)}: backbone pretrained on digits 0-4, head untrained."
    )

    stopped = out / "digits_mlp.stopgrad.onnx"
    _say("1/5", f"Inserting a StopGradient at the backbone output `{BACKBONE_OUTPUT}` with the CLI:")
    print(f"$ onnx-stopgrad insert {_rel(MODEL_PATH)} --at {BACKBONE_OUTPUT} -o {_rel(stopped)}")
    print(insert_stop_with_cli(MODEL_PATH, BACKBONE_OUTPUT, stopped))

    _say(
        "2/5",
        "Building ONNX Runtime training artifacts (cross-entropy, AdamW); the stop decides what trains:",
    )
    with_stop = build_artifacts(stopped, out / "artifacts_stop")
    sizes = {
        init.name: int(np.prod(init.dims))
        for init in onnx.load(str(MODEL_PATH)).graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 0
    }
    all_params = list(sizes)
    print(
        f"  trains:  {', '.join(with_stop.trainable)} "
        f"({sum(sizes[p] for p in with_stop.trainable):,} weights)"
    )
    print(
        f"  frozen:  {', '.join(with_stop.frozen)} ({sum(sizes[p] for p in with_stop.frozen):,} weights, "
        "behind the stop)"
    )
    for line in with_stop.adjustments:
        print(f"  adjusted: {line}")
    print("  (for comparison: the same model without the stop, every parameter trained end to end)")
    end_to_end = build_artifacts(MODEL_PATH, out / "artifacts_end_to_end", requires_grad=all_params)
    removed = gradient_nodes(out / "artifacts_end_to_end") - gradient_nodes(out / "artifacts_stop")
    print(
        f"  gradient nodes: {with_stop.gradient_nodes} with the stop, "
        f"{end_to_end.gradient_nodes} end to end; the stop removed {sum(removed.values())}:"
    )
    for line in _describe(removed):
        print(f"    {line}")

    _say("3/5", "Held-out accuracy before fine-tuning (ONNX Runtime inference, op library loaded):")
    before = accuracy(stopped, data.x_test, data.y_test)
    print(f"  accuracy before: {before:.1%} (chance: 20.0%)")

    _say(
        "4/5",
        f"Fine-tuning the head with ONNX Runtime training ({args.epochs} epochs, batch {args.batch_size}):",
    )
    state, _, losses = finetune(
        out / "artifacts_stop", data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr
    )
    print(f"  loss per epoch: {losses[0]:.3f} -> {losses[-1]:.3f}")
    trained = parameters(state, all_params)
    finetuned = export_for_inference(out / "artifacts_stop", out / "digits_mlp.finetuned.onnx", state=state)
    after = accuracy(finetuned, data.x_test, data.y_test)
    print(f"  accuracy after:  {after:.1%} on {len(data.x_test)} held-out images (before: {before:.1%})")
    initial = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(MODEL_PATH)).graph.initializer}
    for name in all_params:
        change = float(np.max(np.abs(trained[name] - initial[name])))
        print(f"  {name:<18} max |change| = {change:.2e}  ({'trained' if change else 'unchanged'})")
    print(f"  saved the fine-tuned model (trained weights from the checkpoint state): {_rel(finetuned)}")

    _say(
        "5/5",
        f"Step time (median of {args.timing_steps} steps each, taking turns; batch {args.batch_size}, "
        "forward+backward+AdamW):",
    )
    t_stop, t_full = median_step_times(
        [out / "artifacts_stop", out / "artifacts_end_to_end"],
        data,
        batch_size=args.batch_size,
        steps=args.timing_steps,
    )
    print(f"  with the stop (head only):        {t_stop * 1e3:.3f} ms")
    print(f"  without the stop (end to end):    {t_full * 1e3:.3f} ms")
    print(f"  ratio: {t_stop / t_full:.2f}x the end-to-end step time")

    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. "
        "What to try next (after `source .venv/bin/activate`):"
    )
    model = _rel(MODEL_PATH)
    for command, why in [
        (f"onnx-stopgrad list {_rel(stopped)}", "the stop and the parameters it freezes"),
        (f"onnx-stopgrad analyze {model} --at {BACKBONE_OUTPUT}", "what a stop costs and saves"),
        (
            f"onnx-stopgrad show {_rel(stopped)} -o {_rel(out / 'graph.svg')}",
            "a picture, the stopped region shaded",
        ),
        (
            f"onnx-stopgrad insert {model} --at /backbone/backbone.1/Relu_output_0 "
            f"-o {_rel(out / 'earlier.onnx')}",
            "stop earlier: backbone.2 trains too",
        ),
        (
            f"onnx-stopgrad artifacts {_rel(stopped)} -o {_rel(out / 'cli_artifacts')} --loss crossentropy",
            "the same artifacts from the CLI",
        ),
        ("python examples/simsiam/simsiam.py", "SimSiam: what happens without a stop"),
    ]:
        print(f"  {command}\n      # {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
