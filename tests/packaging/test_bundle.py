"""custom_ops/scripts/bundle_ort_headers.py: what setup.py's sdist command puts into
custom_ops/third_party/onnxruntime, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "custom_ops" / "scripts" / "bundle_ort_headers.py"


def _bundle(dest: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ONNXRUNTIME_", "ONNX_STOPGRAD_"))}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(dest)], env={**clean, **env},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def _release(root: Path, licence: bool = True) -> Path:
    """A folder laid out like an ONNX Runtime release: include/ and LICENSE."""
    include = root / "include"
    (include / "core" / "providers").mkdir(parents=True)
    (include / "onnxruntime_c_api.h").write_text("#define ORT_API_VERSION 21\n")
    (include / "core" / "providers" / "resource.h").write_text("// nested header\n")
    if licence:
        (root / "LICENSE").write_text("MIT License\nCopyright (c) Microsoft Corporation\n")
    return include


def test_headers_licence_and_source_note_are_bundled(tmp_path):
    include = _release(tmp_path / "ort")
    dest = tmp_path / "third_party" / "onnxruntime"
    done = _bundle(dest, ONNXRUNTIME_INCLUDE_DIR=str(include))
    assert done.returncode == 0, done.stderr
    assert (dest / "include" / "onnxruntime_c_api.h").read_text() == "#define ORT_API_VERSION 21\n"
    assert (dest / "include" / "core" / "providers" / "resource.h").is_file()
    assert (dest / "LICENSE").read_text().startswith("MIT License")
    assert "ORT_API_VERSION 21" in (dest / "SOURCE").read_text()
    assert not dest.with_name("onnxruntime.partial").exists()


def test_headers_without_a_licence_are_refused_in_one_line(tmp_path):
    include = _release(tmp_path / "ort", licence=False)
    dest = tmp_path / "third_party" / "onnxruntime"
    done = _bundle(dest, ONNXRUNTIME_INCLUDE_DIR=str(include))
    assert done.returncode == 1 and not dest.exists()
    assert done.stderr.count("\n") == 1 and "set ONNXRUNTIME_LICENSE_FILE" in done.stderr
    # ... and taken from ONNXRUNTIME_LICENSE_FILE when it is given.
    (tmp_path / "ORT-LICENSE").write_text("MIT License\n")
    done = _bundle(
        dest, ONNXRUNTIME_INCLUDE_DIR=str(include), ONNXRUNTIME_LICENSE_FILE=str(tmp_path / "ORT-LICENSE")
    )
    assert done.returncode == 0 and (dest / "LICENSE").read_text() == "MIT License\n"


def test_a_wrong_explicit_folder_is_one_line(tmp_path):
    done = _bundle(tmp_path / "dest", ONNXRUNTIME_INCLUDE_DIR=str(tmp_path / "nothing"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == f"bundle_ort_headers: ONNXRUNTIME_INCLUDE_DIR={tmp_path / 'nothing'} has no onnxruntime_c_api.h"
    )
