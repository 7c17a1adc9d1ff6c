"""What ONNX Runtime 1.19 (the last training release) needs, written once: the highest IR
version it loads, and its error messages made readable (C++ locations and signatures off)."""

from __future__ import annotations

import logging
import re

import onnx

__all__ = ["MAX_IR_VERSION", "cap_ir_version", "readable_ort_message"]

log = logging.getLogger(__name__)

#: Highest IR version ONNX Runtime 1.19 loads.
MAX_IR_VERSION = 10

_FAILED_CHECK = re.compile(r"/onnxruntime_src/\S+:\d+ (.*?) was false\.(.*)")
#: "<source file>:<line> <C++ signature>" prefixes of ORT's messages: noise to users.
_CXX_LOCATION = re.compile(
    r"/onnxruntime_src/\S+:\d+ (?:[\w:<>,*& ]+\([^()]*(?:\([^()]*\)[^()]*)*\)(?:::<lambda\([^()]*\)>)?\s*)?"
)
_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_MAX_MESSAGE = 240


def cap_ir_version(model: onnx.ModelProto) -> int | None:
    """Lower ``model.ir_version`` to :data:`MAX_IR_VERSION`; the old version if it changed."""
    if model.ir_version > MAX_IR_VERSION:
        old = model.ir_version
        model.ir_version = MAX_IR_VERSION
        return old
    return None


def readable_ort_message(exc: BaseException) -> str:
    """One line from an ONNX Runtime exception: its status prefix, C++ source locations and
    signatures dropped, a failed check reduced to its message, cut to 240 characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    text = _STATUS.sub("", text)
    check = _FAILED_CHECK.search(text)
    if check:  # "<file>:<line> <C++ signature> <condition> was false. <message>"
        text = check.group(2).strip() or f"internal check '{check.group(1).split(') ')[-1]}' failed"
    text = _CXX_LOCATION.sub("", text).strip()
    if len(text) > _MAX_MESSAGE:
        log.info("ONNX Runtime's full message: %s", text)
        text = text[:_MAX_MESSAGE].rstrip() + "... (-v shows ONNX Runtime's full message)"
    return text
