"""Build hook: compiles custom_ops/ with CMake into onnx_stopgrad/_lib/libonnx_stopgrad.so.

Everything else about the package lives in pyproject.toml. `pip install .` puts the
library in the wheel; `pip install -e .` and `python setup.py build_ext --inplace`
(`make build`) put it in the source tree. Extra CMake arguments come from the
environment variable ONNX_STOPGRAD_CMAKE_ARGS (e.g. "-DONNX_STOPGRAD_WITH_CUDA=OFF",
"-DONNXRUNTIME_INCLUDE_DIR=/opt/ort/include").
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
LIBRARY_FILE = "libonnx_stopgrad.so"


class CMakeExtension(Extension):
    """A shared library that CMake builds from `source_dir` (no Python sources)."""

    def __init__(self, name: str, source_dir: Path) -> None:
        super().__init__(name, sources=[])
        self.source_dir = source_dir


class CMakeBuild(build_ext):
    """build_ext that configures, builds and copies the CMake library into the package."""

    def get_ext_filename(self, fullname: str) -> str:
        # A plain ctypes-style library, not a CPython module: no ABI suffix.
        package, _, _ = fullname.rpartition(".")
        return os.path.join(*package.split("."), LIBRARY_FILE)

    def copy_extensions_to_source(self) -> None:
        # In-place and editable builds copy into onnx_stopgrad/_lib/, which is no package
        # of its own and may not exist yet.
        (ROOT / "onnx_stopgrad" / "_lib").mkdir(exist_ok=True)
        super().copy_extensions_to_source()

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        if shutil.which("cmake") is None:
            raise RuntimeError("cmake not found: install CMake >= 3.18 to build the StopGradient op library")
        build_dir = Path(self.build_temp).resolve() / "custom_ops"
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake",
            "-S", str(ext.source_dir),
            "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            *shlex.split(os.environ.get("ONNX_STOPGRAD_CMAKE_ARGS", "")),
        ]
        jobs = str(os.cpu_count() or 1)
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs], check=True)
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build_dir / LIBRARY_FILE, target)


setup(
    ext_modules=[CMakeExtension("onnx_stopgrad._lib.libonnx_stopgrad", ROOT / "custom_ops")],
    cmdclass={"build_ext": CMakeBuild},
)
