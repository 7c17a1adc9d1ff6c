"""Train artifact directories with ONNX Runtime alone: onnx_stopgrad is never imported, so
the op library is never registered (the portable-artifacts test runs this in a subprocess).

    python _portable_probe.py JOBS.json

JOBS.json: [{"directory": ..., "inputs": NPZ, "steps": N, "output": NPZ}, ...]; each job
writes losses, first-step gradients (grad/<name>) and final parameters (param/<name>) to
its output, or an "error" entry with ONNX Runtime's message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from onnxruntime.training import api


def train(directory: str, inputs: list[np.ndarray], steps: int) -> dict[str, np.ndarray]:
    state = api.CheckpointState.load_checkpoint(f"{directory}/checkpoint")
    module = api.Module(f"{directory}/training_model.onnx", state, f"{directory}/eval_model.onnx")
    optimizer = api.Optimizer(f"{directory}/optimizer_model.onnx", module)
    trainable = [name for name, param in state.parameters if param.requires_grad]
    module.train()
    result: dict[str, np.ndarray] = {}
    losses = []
    for step in range(steps):
        losses.append(float(np.asarray(module(*inputs))))
        if step == 0:
            result.update({f"grad/{n}": state.parameters[n].grad.copy() for n in trainable})
        optimizer.step()
        module.lazy_reset_grad()
    module.eval()
    result["eval_loss"] = np.asarray(module(*inputs), dtype=np.float32)
    result["losses"] = np.array(losses, dtype=np.float32)
    result.update({f"param/{n}": state.parameters[n].data.copy() for n in trainable})
    return result


def main(jobs_file: str) -> None:
    for job in json.loads(Path(jobs_file).read_text()):
        with np.load(job["inputs"]) as data:
            inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        try:
            result = train(job["directory"], inputs, job["steps"])
        except Exception as exc:
            result = {"error": np.array(str(exc))}
        np.savez(job["output"], **result)  # type: ignore[arg-type]  # (numpy stubs: allow_pickle)
    assert not any(name.startswith("onnx_stopgrad") for name in sys.modules), "the library was imported"


if __name__ == "__main__":
    main(sys.argv[1])
