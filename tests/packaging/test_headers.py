"""Header discovery (custom_ops/cmake/OrtHeaders.cmake) and setup.py's build errors, driven
through CMake's configure step and setup.py in a copy of custom_ops/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER = "onnxruntime_c_api.h"

if shutil.which("cmake") is None or shutil.which("c++") is None:
    pytest.skip("needs cmake and a C++ compiler", allow_module_level=True)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONNXRUNTIME_INCLUDE_DIR", "PYTHONPATH") and not k.startswith("ONNX_STOPGRAD_")
    }
    env.update(extra)
    return env


def _fake_headers(folder: Path, api: int = 21) -> Path:
    """A folder whose onnxruntime_c_api.h declares ORT_API_VERSION ``api`` (configure reads only that)."""
    folder.mkdir(parents=True)
    (folder / HEADER).write_text(f"#define ORT_API_VERSION {api}\n")
    return folder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """custom_ops/ without bundled headers (as in a git checkout)."""
    dest = tmp_path / "custom_ops"
    shutil.copytree(ROOT / "custom_ops", dest, ignore=shutil.ignore_patterns("third_party", "build"))
    return dest


def _configure(
    source: Path, build: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), *args],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _chosen(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "ONNX Runtime headers (" in line)
    return line.split("): ", 1)[1].split(",")[0]


def test_explicit_folder_is_honoured_by_every_configure_of_one_build_tree(source, tmp_path):
    first, second = _fake_headers(tmp_path / "a"), _fake_headers(tmp_path / "b")
    build = tmp_path / "build"
    assert _chosen(_configure(source, build, _env(ONNXRUNTIME_INCLUDE_DIR=str(first)))) == str(first)
    # The cache now exists: a new environment variable still wins ...
    assert _chosen(_configure(source, build, _env(ONNXRUNTIME_INCLUDE_DIR=str(second)))) == str(second)
    # ... and so does a new -D, and a wrong folder is refused, not replaced by the cached one.
    assert _chosen(_configure(source, build, _env(), f"-DONNXRUNTIME_INCLUDE_DIR={first}")) == str(first)
    wrong = _configure(source, build, _env(ONNXRUNTIME_INCLUDE_DIR=str(tmp_path / "nothing")))
    assert wrong.returncode != 0
    assert f"ONNXRUNTIME_INCLUDE_DIR={tmp_path / 'nothing'} has no {HEADER}" in " ".join(wrong.stderr.split())


def test_every_failed_source_says_why(source, tmp_path):
    if any(Path(d, HEADER).exists() for d in ("/usr/include/onnxruntime", "/usr/local/include/onnxruntime")):
        pytest.skip("this system has ONNX Runtime headers installed")
    done = _configure(source, tmp_path / "build", _env(ONNX_STOPGRAD_HEADER_SOURCES="bundled system nowhere"))
    assert done.returncode != 0
    text = " ".join(done.stderr.split())
    assert (
        f"bundled: no {source / 'third_party' / 'onnxruntime' / 'include' / HEADER} (only sdists carry it)"
        in text
    )
    assert "system: no onnxruntime_c_api.h on the include path" in text
    assert "nowhere: unknown source (known: bundled, system, debian, tarball)" in text
    assert "Set ONNXRUNTIME_INCLUDE_DIR to a folder holding onnxruntime_c_api.h" in text


def test_bundled_headers_are_found_first(source, tmp_path):
    bundled = _fake_headers(source / "third_party" / "onnxruntime" / "include")
    done = _configure(source, tmp_path / "build", _env())
    assert _chosen(done) == str(bundled)
    assert "ONNX Runtime headers (bundled)" in done.stdout


def test_too_old_headers_are_refused(source, tmp_path):
    old = _fake_headers(tmp_path / "old", api=17)
    done = _configure(source, tmp_path / "build", _env(ONNXRUNTIME_INCLUDE_DIR=str(old)))
    assert done.returncode != 0 and "needs >= 18" in " ".join(done.stderr.split())


def test_setup_py_build_failure_is_one_line_without_traceback(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "custom_ops", checkout / "custom_ops", ignore=shutil.ignore_patterns("third_party")
    )
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "onnx_stopgrad", checkout / "onnx_stopgrad", ignore=shutil.ignore_patterns("*.so"))
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext"],
        cwd=checkout,
        env=_env(ONNX_STOPGRAD_HEADER_SOURCES="bundled"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: onnx-stopgrad: configuring custom_ops/ with CMake failed"), last
    assert "bundled: no" in done.stderr  # CMake's reason is above the line


def test_failed_fetches_say_why(source, tmp_path):
    """Without apt-get, curl or wget on PATH both fetch sources fail, each with its reason."""
    build = tmp_path / "build"
    # A first configure finds the compiler (with the full PATH) and caches it.
    _configure(source, build, _env(ONNX_STOPGRAD_HEADER_SOURCES="bundled"))
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "mkdir", "rm", "find", "dirname", "tail"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"needs {tool}")
        (tools / tool).symlink_to(found)
    cmake = shutil.which("cmake") or "cmake"
    env = _env(PATH=str(tools), ONNX_STOPGRAD_HEADER_SOURCES="debian,tarball")
    done = subprocess.run(
        [cmake, "-S", str(source), "-B", str(build)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0
    text = " ".join(done.stderr.split())
    assert "debian: apt-get/dpkg not found (not a Debian-like system)" in text, text
    assert "tarball: neither curl nor wget is installed" in text, text
