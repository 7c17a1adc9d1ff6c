"""Build hooks: the CMake op library, a Python-independent wheel tag, and a complete sdist.

Everything else about the package lives in pyproject.toml.

- build_ext compiles custom_ops/ with CMake into onnx_stopgrad/_lib/ (libonnx_stopgrad.so,
  libonnx_stopgrad.dylib or onnx_stopgrad.dll). `pip install .` puts the library in the
  wheel; `pip install -e .` and `python setup.py build_ext --inplace` (`make build`) put
  it in the source tree. Extra CMake arguments come from ONNX_STOPGRAD_CMAKE_ARGS (e.g.
  "-DONNX_STOPGRAD_WITH_CUDA=OFF"); ONNXRUNTIME_INCLUDE_DIR and ONNX_STOPGRAD_HEADER_SOURCES
  choose the ONNX Runtime headers (docs/op-library.md); ONNX_STOPGRAD_ZIG=<zig binary>
  compiles with zig for glibc 2.28 (custom_ops/cmake/zig-toolchain.cmake).
- bdist_wheel tags the wheel py3-none-<platform>: the library has no Python ABI.
- sdist first copies ONNX Runtime's headers and licence into custom_ops/third_party/
  (custom_ops/scripts/bundle_ort_headers.py), so the sdist builds offline.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
CUSTOM_OPS = ROOT / "custom_ops"
BUNDLED_HEADERS = CUSTOM_OPS / "third_party" / "onnxruntime"

if sys.platform == "win32":
    LIBRARY_FILE = "onnx_stopgrad.dll"
elif sys.platform == "darwin":
    LIBRARY_FILE = "libonnx_stopgrad.dylib"
else:
    LIBRARY_FILE = "libonnx_stopgrad.so"


class CMakeExtension(Extension):
    """A shared library that CMake builds from `source_dir` (no Python sources)."""

    def __init__(self, name: str, source_dir: Path) -> None:
        super().__init__(name, sources=[])
        self.source_dir = source_dir


def _run(command: list[str], step: str) -> None:
    """Run a CMake step; a failure is one line (CMake's own message is printed above it)."""
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = f"exit status {exc.returncode}" if isinstance(exc, subprocess.CalledProcessError) else exc
        raise SetupError(f"onnx-stopgrad: {step} failed ({reason}); CMake's message above says why") from None


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
            raise SetupError(
                "onnx-stopgrad: cmake not found: install CMake >= 3.18 (e.g. pip install cmake) "
                "to build the StopGradient op library"
            )
        cmake_args = shlex.split(os.environ.get("ONNX_STOPGRAD_CMAKE_ARGS", ""))
        zig = os.environ.get("ONNX_STOPGRAD_ZIG")
        if zig:
            cmake_args.append(f"-DCMAKE_TOOLCHAIN_FILE={ext.source_dir / 'cmake' / 'zig-toolchain.cmake'}")
        # A separate tree per compiler: CMake cannot switch compilers inside one.
        build_dir = Path(self.build_temp).resolve() / ("custom_ops-zig" if zig else "custom_ops")
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = ["cmake", "-S", str(ext.source_dir), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"]
        _run([*configure, *cmake_args], "configuring custom_ops/ with CMake")
        jobs = str(os.cpu_count() or 1)
        _run(
            ["cmake", "--build", str(build_dir), "--config", "Release", "--parallel", jobs],
            "compiling the StopGradient op library",
        )
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build_dir / "lib" / LIBRARY_FILE, target)


class PlatformWheel(bdist_wheel):
    """One wheel per platform for every CPython 3: tag py3-none-<platform>."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


class CompleteSdist(sdist):
    """sdist with ONNX Runtime's headers and licence in custom_ops/third_party/ (made once,
    kept while they exist; `make clean` removes them)."""

    def run(self) -> None:
        if not (BUNDLED_HEADERS / "include" / "onnxruntime_c_api.h").is_file():
            script = CUSTOM_OPS / "scripts" / "bundle_ort_headers.py"
            done = subprocess.run([sys.executable, str(script), str(BUNDLED_HEADERS)], check=False)
            if done.returncode != 0:
                raise SetupError("onnx-stopgrad: the sdist needs ONNX Runtime's headers (see the line above)")
        super().run()


setup(
    ext_modules=[CMakeExtension("onnx_stopgrad._lib.libonnx_stopgrad", CUSTOM_OPS)],
    cmdclass={"build_ext": CMakeBuild, "bdist_wheel": PlatformWheel, "sdist": CompleteSdist},
)
