"""Cost of building training artifacts for a BERT-base classifier, against ORT's own tool.

A Hugging Face BertForSequenceClassification with BertConfig's defaults (12 layers,
hidden 768, ~110M parameters; random init, weights perturbed so no two are equal),
exported with the TorchScript exporter (~440 MB) into a temporary folder that later runs
reuse. The split: a StopGradient after encoder layer 10 (0-based), so layer 11, the pooler
and the classifier train and everything before is frozen.

Jobs, each in its own process, round-robin (one of each per round), medians over rounds:
  * ort   ORT's ``generate_artifacts`` with ``frozen_params`` for the same split, on the
          model without a stop, after only the fix-ups it needs to run
          (``onnx_stopgrad.training.apply_fixups``: IR 10, LayerNorm outputs)
  * api   ``onnx_stopgrad.training.generate_artifacts(path, stop_at=[T])``, defaults
  * cli   ``onnx-stopgrad artifacts MODEL --at T --loss crossentropy``, end to end
Wall time is measured around each process (interpreter start and imports included); peak
RSS is the process's own (``os.wait4``'s ru_maxrss). Goals: cli/ort <= 1.1 wall, <= 1.05
peak memory. ``--quick`` uses a 2-layer, hidden-128 model (a smoke test, not a measurement).

Run: .venv/bin/python benchmarks/artifacts_cost.py [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOBS = ("ort", "api", "cli")
CACHE = Path(tempfile.gettempdir()) / "onnx-stopgrad-bench"
SEQ, BATCH = 128, 2


def _config(quick: bool):  # type: ignore[no-untyped-def]
    from transformers import BertConfig

    if quick:
        return BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)
    return BertConfig()  # 12 layers, hidden 768, 12 heads, FFN 3072


def build_model(quick: bool) -> tuple[Path, str]:
    """Export (or reuse) the classifier; returns its path and the stop tensor."""
    config = _config(quick)
    layer = config.num_hidden_layers - 2
    path = CACHE / f"bert-{'quick' if quick else 'base'}.onnx"
    if not path.exists():
        import torch
        from transformers import BertForSequenceClassification

        torch.manual_seed(0)
        config.num_labels = 2
        model = BertForSequenceClassification(config).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.01)
        ids = torch.randint(0, config.vocab_size, (BATCH, SEQ))
        mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.onnx")
        torch.onnx.export(
            model, (ids, mask), str(partial), input_names=["input_ids", "attention_mask"],
            output_names=["logits"], opset_version=17, dynamo=False,
        )  # fmt: skip
        os.replace(partial, path)
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    prefix = f"/bert/encoder/layer.{layer}/"
    last = [n for n in proto.graph.node if n.name.startswith(prefix)][-1]
    return path, last.output[0]


def _split(model: Path, at: str) -> tuple[list[str], list[str]]:
    """The split onnx-stopgrad derives (cached next to the model): (trainable, frozen)."""
    cached = model.with_suffix(".split.json")
    if not cached.exists():
        from onnx_stopgrad.training import generate_artifacts

        with tempfile.TemporaryDirectory() as scratch:
            report = generate_artifacts(
                model, loss="crossentropy", optimizer="adamw", artifact_directory=scratch,
                stop_at=[at], measure_removed=False,
            )  # fmt: skip
        cached.write_text(json.dumps([list(report.trainable), list(report.frozen)]))
    trainable, frozen = json.loads(cached.read_text())
    return trainable, frozen


def run_job(job: str, model: Path, at: str, out: Path) -> None:
    """One job, in this process."""
    if job == "ort":
        import onnx
        from onnxruntime.training import artifacts

        from onnx_stopgrad.training import apply_fixups

        trainable, frozen = _split(model, at)
        proto = onnx.load(str(model))
        apply_fixups(proto)
        artifacts.generate_artifacts(
            proto, requires_grad=trainable, frozen_params=frozen, loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=artifacts.OptimType.AdamW, artifact_directory=out,
        )  # fmt: skip
    elif job == "api":
        from onnx_stopgrad.training import generate_artifacts

        generate_artifacts(
            model, loss="crossentropy", optimizer="adamw", artifact_directory=out, stop_at=[at]
        )
    else:
        raise ValueError(job)


def _command(job: str, model: Path, at: str, out: Path) -> list[str]:
    if job == "cli":
        cli = Path(sys.executable).parent / "onnx-stopgrad"
        head = (
            [str(cli)]
            if cli.exists()
            else [sys.executable, "-c", "from onnx_stopgrad.cli import main; main()"]
        )
        return [*head, "artifacts", str(model), "--at", at, "--loss", "crossentropy", "-o", str(out)]
    return [sys.executable, __file__, "--job", job, "--model", str(model), "--at", at, "--out", str(out)]


def _env() -> dict[str, str]:
    """The environment of the children: this checkout's onnx_stopgrad first."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def measure(job: str, model: Path, at: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one job in a fresh process."""
    scratch = Path(tempfile.mkdtemp(prefix="onnx-stopgrad-bench-"))
    out = scratch / "artifacts"
    try:
        with open(scratch / "stderr", "w+b") as errors:
            start = time.perf_counter()
            command = _command(job, model, at, out)
            proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=errors)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                errors.seek(0)
                tail = errors.read().decode(errors="replace")[-2000:]
                raise SystemExit(f"job {job} failed (exit {proc.returncode}):\n{tail}")
        if not (out / "training_model.onnx").exists():
            raise SystemExit(f"job {job} wrote no training_model.onnx")
        return wall, usage.ru_maxrss / 1024
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2-layer hidden-128 model (smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--job", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--at", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        args.out.mkdir(parents=True, exist_ok=True)
        run_job(args.job, args.model, args.at, args.out)
        return 0
    if args.setup:
        model, at = build_model(args.quick)
        _split(model, at)  # computed once, outside the timed jobs
        print(json.dumps([str(model), at]))
        return 0
    # Set up in a child: a process inherits its parent's peak RSS across fork and exec, so
    # this one must stay small for the jobs' ru_maxrss to be their own.
    setup = [sys.executable, __file__, "--setup", *(["--quick"] if args.quick else [])]
    done = subprocess.run(setup, env=_env(), stdout=subprocess.PIPE, text=True, check=True)
    path, at = json.loads(done.stdout.strip().splitlines()[-1])
    model = Path(path)
    size = model.stat().st_size / 2**20
    print(f"BERT {'quick (2 layers, hidden 128)' if args.quick else 'base (12 layers, hidden 768)'}: "
          f"{size:.0f} MB TorchScript export, stop at {at}; {args.rounds} rounds, round-robin, "
          f"separate processes, medians")  # fmt: skip
    walls: dict[str, list[float]] = {job: [] for job in JOBS}
    peaks: dict[str, list[float]] = {job: [] for job in JOBS}
    for _ in range(args.rounds):
        for job in JOBS:
            wall, peak = measure(job, model, at)
            walls[job].append(wall)
            peaks[job].append(peak)
    wall = {job: statistics.median(v) for job, v in walls.items()}
    peak = {job: statistics.median(v) for job, v in peaks.items()}
    names = {
        "ort": "ORT `generate_artifacts`, `frozen_params` (same split)",
        "api": "`onnx_stopgrad.training.generate_artifacts`, defaults",
        "cli": "`onnx-stopgrad artifacts --at …` end to end",
    }
    print()
    print("| job | wall (s) | peak RSS (MB) | wall / ORT | peak / ORT |")
    print("|---|---:|---:|---:|---:|")
    for job in JOBS:
        print(f"| {names[job]} | {wall[job]:.1f} | {peak[job]:.0f} | "
              f"{wall[job] / wall['ort']:.2f} | {peak[job] / peak['ort']:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
