"""Training-step cost of StopGradient in ONNX Runtime 1.19 (ratios measured in one process).

1. Encoder head fine-tune: a 6-layer transformer encoder of MiniLM's shape (hidden 384,
   12 heads, FFN 1536, seq 128, batch 16, dropout off) with a classification head.
   * stop      onnx_stopgrad.training artifacts, StopGradient at the encoder output
   * frozen    ORT's own artifacts for the model without the stop, frozen_params = encoder
   * inference ORT InferenceSession of the model (forward only)
   Goals: stop/frozen <= 1.02, stop/inference <= 1.05.
2. Target network: y = Q(s) - 0.9 * stop(Q(s')), one shared MLP Q (~4.7M weights), batch 256.
   * stop      onnx_stopgrad.training artifacts
   * zero-grad ORT artifacts where StopGradient has a registered zero gradient (ORT then
               runs the backward pass of Q(s') on zeros)
   * torch     PyTorch eager with .detach() and torch.optim.AdamW (with --threads threads
               and with one: on a busy 2-core machine OpenMP's second thread can cost time)
   Goals: stop/zero-grad <= 0.70, stop/torch <= 0.80.

Steps are timed round-robin (one step of each variant per round) so load on a shared
machine hits all variants alike; the table shows medians. "RSS +MB" is the growth of
the process's resident memory while a variant was set up and warmed up; "peak" is the
process's peak RSS after it. Run: .venv/bin/python benchmarks/training_step.py
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import psutil
import torch
from onnxruntime.training import api as ort_api
from onnxruntime.training import artifacts as ort_artifacts

import onnx_stopgrad
from onnx_stopgrad import remove_stop_gradient
from onnx_stopgrad import torch as sg_torch
from onnx_stopgrad._names import QUALIFIED_OP
from onnx_stopgrad.training import generate_artifacts, load

Step = Callable[[], float]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def options(threads: int) -> onnxruntime.SessionOptions:
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Idle ORT threads would spin for a while after each step and slow the next variant.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Distinct weights: exporters merge initializers whose values are equal (fresh LayerNorms)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn_like(p))


def export(module: torch.nn.Module, args: tuple, names: list[str], path: Path) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sg_torch.export(module, args, path, input_names=names, output_names=["y"], do_constant_folding=False)
    return onnx.load(str(path))


def ort_module_step(directory: Path, feeds: list[np.ndarray], threads: int, with_stop_library: bool) -> Step:
    so = options(threads)
    if with_stop_library:
        _, module, optimizer = load(directory, options=so)
    else:
        state = ort_api.CheckpointState.load_checkpoint(str(directory / "checkpoint"))
        module = ort_api.Module(
            str(directory / "training_model.onnx"),
            state,
            str(directory / "eval_model.onnx"),
            session_options=so,
        )
        optimizer = ort_api.Optimizer(str(directory / "optimizer_model.onnx"), module)
    module.train()

    def step() -> float:
        start = time.perf_counter()
        module(*feeds)
        optimizer.step()
        module.lazy_reset_grad()
        return time.perf_counter() - start

    step.keep = (module, optimizer)  # type: ignore[attr-defined]
    return step


def ort_artifacts_own(model: onnx.ModelProto, directory: Path, **kwargs) -> None:
    """ORT's own generate_artifacts (IR capped at 10 so ORT 1.19 can load what it writes)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = min(model.ir_version, 10)
    directory.mkdir(parents=True, exist_ok=True)
    ort_artifacts.generate_artifacts(model, artifact_directory=directory, **kwargs)
    for path in directory.glob("*_model.onnx"):
        built = onnx.load(str(path))
        if built.ir_version > 10:
            built.ir_version = 10
            onnx.save(built, str(path))


def measure(variants: dict[str, Callable[[], Step]], warmup: int, rounds: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    steps: dict[str, Step] = {}
    for name, make in variants.items():
        gc.collect()
        before = rss_mb()
        steps[name] = make()
        for _ in range(warmup):
            steps[name]()
        results[name] = {"rss": rss_mb() - before, "peak": peak_mb(), "times": []}
    for _ in range(rounds):
        for name, step in steps.items():
            results[name]["times"].append(step())
    for result in results.values():
        result["median"] = statistics.median(result["times"])
    return results


def table(title: str, results: dict[str, dict], base: str, goals: dict[str, float]) -> str:
    lines = [
        f"### {title}",
        "",
        "| variant | median step (ms) | ratio stop / variant | goal | RSS +MB | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ratio = results[base]["median"] / r["median"]
        goal = f"<= {goals[name]:.2f}" if name in goals else ""
        verdict = "" if name not in goals else (" (met)" if ratio <= goals[name] else " (missed)")
        cells = [
            name,
            f"{1e3 * r['median']:.1f}",
            f"{ratio:.3f}{verdict}",
            goal,
            f"{r['rss']:.0f}",
            f"{r['peak']:.0f}",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


class Encoder(torch.nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, classes: int = 2) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1).detach())


def bench_encoder(work: Path, args: argparse.Namespace) -> str:
    batch, seq = args.batch, args.seq
    module = Encoder(args.layers, 384, 12).train()
    randomize(module, 0)
    x = np.random.default_rng(0).standard_normal((batch, seq, 384)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 2, batch).astype(np.int64)
    stopped = export(module, (torch.from_numpy(x),), ["x"], work / "encoder.onnx")
    plain, _ = remove_stop_gradient(stopped)
    report = generate_artifacts(
        stopped, loss="crossentropy", optimizer="adamw", artifact_directory=work / "enc_stop"
    )
    encoder_params = [t.name for t in plain.graph.initializer if t.name.startswith("encoder.")]
    head_params = [t.name for t in plain.graph.initializer if t.name.startswith("head.")]
    assert sorted(report.trainable) == sorted(head_params), report.trainable
    ort_artifacts_own(
        plain, work / "enc_frozen", requires_grad=head_params, frozen_params=encoder_params,
        loss=ort_artifacts.LossType.CrossEntropyLoss, optimizer=ort_artifacts.OptimType.AdamW,
    )  # fmt: skip
    plain_path = work / "encoder_plain.onnx"
    plain.ir_version = min(plain.ir_version, 10)
    onnx.save(plain, str(plain_path))

    def inference() -> Step:
        session = onnxruntime.InferenceSession(
            str(plain_path), options(args.threads), providers=["CPUExecutionProvider"]
        )

        def step() -> float:
            start = time.perf_counter()
            session.run(None, {"x": x})
            return time.perf_counter() - start

        step.keep = session  # type: ignore[attr-defined]
        return step

    results = measure(
        {
            "stop": lambda: ort_module_step(work / "enc_stop", [x, labels], args.threads, True),
            "frozen": lambda: ort_module_step(work / "enc_frozen", [x, labels], args.threads, False),
            "inference": inference,
        },
        args.warmup,
        args.rounds,
    )
    title = (f"Encoder head fine-tune ({args.layers} layers, hidden 384, 12 heads, seq {seq}, batch {batch}; "
             f"stops removed {report.gradient_nodes_removed} gradient nodes)")  # fmt: skip
    return table(title, results, "stop", {"frozen": 1.02, "inference": 1.05})


class TargetNet(torch.nn.Module):
    def __init__(self, state: int, hidden: int) -> None:
        super().__init__()
        self.q = torch.nn.Sequential(
            torch.nn.Linear(state, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return self.q(s) - 0.9 * self.q(s_next).detach()


def register_zero_gradient() -> None:
    """Give StopGradient a zero gradient in ORT (the formulation stops are compared with)."""
    from onnxruntime.capi import _pybind_state as C

    node = C.GradientNodeDefinition()
    node.op_type, node.domain = "Sub", ""
    node.inputs, node.outputs, node.attributes = ["GO(0)", "GO(0)"], ["GI(0)"], []
    C.register_gradient_definition(QUALIFIED_OP, [node])


def bench_target(work: Path, args: argparse.Namespace) -> str:
    module = TargetNet(args.state, args.hidden).train()
    rng = np.random.default_rng(0)
    s, s_next = (rng.standard_normal((args.rl_batch, args.state)).astype(np.float32) for _ in range(2))
    reward = rng.standard_normal((args.rl_batch, 1)).astype(np.float32)
    stopped = export(
        module, (torch.from_numpy(s), torch.from_numpy(s_next)), ["s", "s_next"], work / "target.onnx"
    )
    report = generate_artifacts(stopped, loss="mse", optimizer="adamw", artifact_directory=work / "tn_stop")
    register_zero_gradient()
    ort_artifacts_own(
        stopped, work / "tn_zero", requires_grad=list(report.trainable), loss=ort_artifacts.LossType.MSELoss,
        optimizer=ort_artifacts.OptimType.AdamW, custom_op_library=onnx_stopgrad.get_library_path(),
    )  # fmt: skip
    weights = sum(p.numel() for p in module.parameters())

    def eager(threads: int) -> Step:
        net = TargetNet(args.state, args.hidden)
        net.load_state_dict(module.state_dict())
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, eps=1e-6, weight_decay=0.0)
        inputs = [torch.from_numpy(a) for a in (s, s_next, reward)]

        def step() -> float:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(net(inputs[0], inputs[1]), inputs[2])
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        return step

    results = measure(
        {
            "stop": lambda: ort_module_step(work / "tn_stop", [s, s_next, reward], args.threads, True),
            "zero-grad": lambda: ort_module_step(work / "tn_zero", [s, s_next, reward], args.threads, True),
            f"torch eager, {args.threads} threads": lambda: eager(args.threads),
            "torch eager, 1 thread": lambda: eager(1),
        },
        args.warmup,
        args.rounds,
    )
    shape = f"MLP {args.state}-{args.hidden}-{args.hidden}-1, {weights / 1e6:.1f}M weights"
    title = (f"Target network ({shape}, batch {args.rl_batch}; "
             f"stops removed {report.gradient_nodes_removed} gradient nodes)")  # fmt: skip
    torch.set_num_threads(args.threads)
    goals = {"zero-grad": 0.70, f"torch eager, {args.threads} threads": 0.80, "torch eager, 1 thread": 0.80}
    return table(title, results, "stop", goals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (ORT and torch)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--state", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--rl-batch", type=int, default=256)
    parser.add_argument("--only", choices=["encoder", "target"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="onnx-stopgrad-bench.") as scratch:
        work = Path(scratch)
        if args.only in (None, "target"):
            print(bench_target(work, args), "\n", flush=True)
        if args.only in (None, "encoder"):
            print(bench_encoder(work, args), "\n", flush=True)
    print(f"process peak RSS: {peak_mb():.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
