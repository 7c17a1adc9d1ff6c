"""Peak memory of one run of a model on a 256 MiB float tensor, for several model variants.

Invoked by test_op_memory.py in a fresh interpreter: ``python _peak_memory_probe.py
VARIANT...`` prints one JSON object {variant: bytes the run's peak RSS rose above the RSS
just before it}. Between variants the kernel's peak-RSS mark is reset (/proc/self/clear_refs),
so each figure belongs to its own run.
"""

from __future__ import annotations

import gc
import json
import sys

import numpy as np
import onnxruntime as ort
import psutil
from onnx import TensorProto, helper

from onnx_stopgrad import DOMAIN, OP_TYPE, OPSET_VERSION, session_options

ELEMENTS = 64 * 1024 * 1024  # 256 MiB of float32
F = TensorProto.FLOAT


def build(variant: str) -> bytes:
    """a = -x; y = a - StopGradient(a) (bare: y = a - a); for 'copy' the stop is also an output.

    `a` stays alive until y is computed, so a copying stop holds a second 256 MiB buffer
    at the same time as `a`; an aliased one does not.
    """
    nodes = [helper.make_node("Neg", ["x"], ["a"])]
    if variant == "bare":
        nodes.append(helper.make_node("Sub", ["a", "a"], ["y"]))
    else:
        nodes.append(helper.make_node(OP_TYPE, ["a"], ["b"], domain=DOMAIN))
        nodes.append(helper.make_node("Sub", ["a", "b"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", F, [ELEMENTS])]
    if variant == "copy":  # a graph output gets its own buffer: the kernel must copy
        outputs.append(helper.make_tensor_value_info("b", F, [ELEMENTS]))
    graph = helper.make_graph(nodes, variant, [helper.make_tensor_value_info("x", F, [ELEMENTS])], outputs)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)],
        ir_version=10,
    )
    return model.SerializeToString()


def _peak_rss() -> int:
    """The process's peak resident set size since the last reset (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def growth(variant: str, x: np.ndarray) -> int:
    options = session_options()
    # Plain allocations, so the peak shows buffers, not arena or pattern planning slack.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    session = ort.InferenceSession(build(variant), options, providers=["CPUExecutionProvider"])
    gc.collect()
    _reset_peak_rss()
    before = psutil.Process().memory_info().rss
    outputs = session.run(None, {"x": x})
    peak = _peak_rss()
    assert not outputs[0].any()  # a - a == 0 everywhere
    if variant == "copy":
        assert (outputs[1] == -1).all()
    return peak - before


def main(variants: list[str]) -> None:
    x = np.ones(ELEMENTS, dtype=np.float32)
    print(json.dumps({variant: growth(variant, x) for variant in variants}))


if __name__ == "__main__":
    main(sys.argv[1:])
