"""RSS while the library is registered over and over, measured in a fresh interpreter.

Invoked by test_op_registration.py (a fresh process: no other options keep the library
loaded): ``python _registration_probe.py CYCLES REGISTRATIONS`` prints one JSON object:

- CYCLES sessions created and destroyed, each with freshly registered SessionOptions: RSS
  growth per cycle after warm-up (a quarter of the cycles), outputs that differed from
  their inputs, and whether the library is still mapped once every options and session
  that registered it is gone;
- rounds of REGISTRATIONS SessionOptions created and dropped with the library registered,
  against the same loop without it (the control), while one options keeps the library
  loaded: RSS growth in bytes per registration, for both loops.
"""

from __future__ import annotations

import gc
import json
import sys

import numpy as np
import onnxruntime as ort
import psutil
from onnx import TensorProto, helper

from onnx_stopgrad import (
    DOMAIN,
    OP_TYPE,
    OPSET_VERSION,
    get_library_path,
    session_options,
)


def chain() -> bytes:
    """x -> StopGradient -> StopGradient -> y."""
    graph = helper.make_graph(
        [
            helper.make_node(OP_TYPE, ["x"], ["s"], domain=DOMAIN),
            helper.make_node(OP_TYPE, ["s"], ["y"], domain=DOMAIN),
        ],
        "registration",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, OPSET_VERSION)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def library_mapped() -> bool:
    with open("/proc/self/maps") as maps:
        return get_library_path() in maps.read()


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def bytes_per_options(count: int, register: bool, rounds: int = 3) -> float:
    """RSS growth per SessionOptions created and dropped, with or without the library.

    The smallest of ``rounds`` rounds after a warm-up round: memory kept for good shows in
    every round, while the heap's one-off growth to a new high-water mark shows in one.
    """

    def create(how_many: int) -> None:
        for _ in range(how_many):
            options = ort.SessionOptions()
            if register:
                options.register_custom_ops_library(get_library_path())

    create(count)  # warm-up
    growths = []
    for _ in range(rounds):
        before = rss()
        create(count)
        growths.append((rss() - before) / count)
    return min(growths)


def session_cycles(cycles: int) -> dict:
    model = chain()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    warm_at = max(cycles // 4, 1)
    rss_warm = 0
    mismatches = 0
    for index in range(1, cycles + 1):
        session = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
        mismatches += session.run(None, {"x": x})[0].tobytes() != x.tobytes()
        del session
        if index == warm_at:
            rss_warm = rss()
    growth = rss() - rss_warm
    return {
        "kb_per_cycle": growth / 1024 / (cycles - warm_at),
        "mismatches": mismatches,
        "still_mapped": library_mapped(),
    }


def main(cycles: int, registrations: int) -> dict:
    figures = session_cycles(cycles)
    keeper = session_options()  # keeps the library loaded whatever the build does at unload
    figures["bytes_per_registration"] = bytes_per_options(registrations, register=True)
    figures["bytes_per_options_control"] = bytes_per_options(registrations, register=False)
    del keeper
    return figures


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
