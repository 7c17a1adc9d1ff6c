"""Faults: SIGKILL while writing, a full disk, a read-only output directory.

A killed run leaves the input intact and the output either absent or a complete file (the
previous one or the new one), never a truncated one. What a kill can leave behind: hidden
``.<output name>.<random>.tmp`` files beside the output (a killed process cannot remove
them); nothing else.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rel_corpus import finish
from rel_harness import _env, run_real_cli

from onnx_stopgrad._io import load_model, save_model
from onnx_stopgrad.errors import ModelSaveError

_SIDE = 5000  # a 5000 x 5000 float32 weight: 100 MB


def _big_model() -> onnx.ModelProto:
    weight = np.random.default_rng(0).standard_normal((_SIDE, _SIDE), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Neg", ["r"], ["y"], name="neg"),
        ],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, _SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, _SIDE])],
        [numpy_helper.from_array(weight, "W")],
    )
    return finish(graph)


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "onnx_stopgrad", *argv],
        cwd=str(cwd),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("big")
    model = _big_model()
    (directory / "inline").mkdir()
    (directory / "inline" / "model.onnx").write_bytes(model.SerializeToString())
    (directory / "external").mkdir()
    onnx.save(
        model,
        str(directory / "external" / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    return directory


@pytest.mark.parametrize("layout", ["inline", "external"])
def test_sigkill_while_writing_never_leaves_a_truncated_output(big_dir, tmp_path, layout) -> None:
    source = big_dir / layout
    inputs_before = {p.name: _sha(p) for p in source.iterdir()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    new_argv = ["insert", "model.onnx", "--at", "r", "-o", str(out)]
    old_argv = ["insert", "model.onnx", "--at", "h", "-o", str(out)]

    # Reference runs: the complete previous output and the complete new output.
    started = time.monotonic()
    assert run_real_cli(old_argv, source, timeout=120, mem_mb=8192).rc == 0
    previous = {p.name: _sha(p) for p in out_dir.iterdir()}
    assert run_real_cli(new_argv, source, timeout=120, mem_mb=8192).rc == 0
    duration = (time.monotonic() - started) / 2
    new = {p.name: _sha(p) for p in out_dir.iterdir()}
    assert previous["model.onnx"] != new["model.onnx"]

    rng = random.Random(11)
    outcomes = []
    for trial in range(8):
        with_previous = trial % 2 == 0
        shutil.rmtree(out_dir)
        out_dir.mkdir()
        if with_previous:
            assert run_real_cli(old_argv, source, timeout=120, mem_mb=8192).rc == 0
        proc = _start(new_argv, source)
        time.sleep(rng.uniform(0.3, 1.1) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        files = {p.name: _sha(p) for p in out_dir.iterdir() if not p.name.endswith(".tmp")}
        leftovers = [p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")]
        assert all(n.startswith(".") for n in leftovers), leftovers
        if "model.onnx" in files:
            # Whatever model is there is one complete version, and the data it names is complete.
            state = "new" if files["model.onnx"] == new["model.onnx"] else "previous"
            assert state == "new" or (with_previous and files["model.onnx"] == previous["model.onnx"])
            for name, digest in files.items():
                assert digest in (new.get(name), previous.get(name)), f"{name} is not a complete version"
            onnx.checker.check_model(str(out))
        else:
            state = "absent"
            for name, digest in files.items():  # copied external data: complete or absent
                assert digest in (new.get(name), previous.get(name))
        outcomes.append((state, len(leftovers)))
        assert {p.name: _sha(p) for p in source.iterdir()} == inputs_before
    print(f"\nsigkill {layout}: (state, temp files left) per trial: {outcomes}")


def test_disk_full_while_writing_is_clean(tmp_path, monkeypatch) -> None:
    """ENOSPC from the OS while writing: one clean error, no temp file, old output kept."""
    model = finish(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        )
    )
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous complete output")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ModelSaveError, match="No space left") as info:
        save_model(model, out)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert out.read_bytes() == b"previous complete output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_disk_full_while_copying_external_data_is_clean(tmp_path, monkeypatch) -> None:
    """ENOSPC half-way through copying external data: no partial weights, no model."""
    weight = np.ones((64, 64), np.float32)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])],
        [numpy_helper.from_array(weight, "W")],
    )
    onnx.save(
        finish(graph), str(src / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    proto, source_dir = load_model(src / "m.onnx")

    def copy_then_fail(source, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\0" * 100)  # part of the data made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(ModelSaveError):
        save_model(proto, dst / "m.onnx", source_dir)
    assert list(dst.iterdir()) == []


def _mount_tmpfs(directory: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True
    )
    return done.returncode == 0


def _umount(directory: Path) -> None:
    subprocess.run(["umount", str(directory)], capture_output=True)


def test_real_full_disk_gives_one_line_and_nothing_partial(tmp_path, big_dir) -> None:
    """A 4 MiB tmpfs as output directory, a 100 MB model: ENOSPC from the kernel."""
    mount = tmp_path / "full"
    mount.mkdir()
    if not _mount_tmpfs(mount, "size=4m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC tests above cover it")
    try:
        for layout in ("inline", "external"):
            result = run_real_cli(
                ["insert", "model.onnx", "--at", "r", "-o", str(mount / "out.onnx")],
                big_dir / layout,
                timeout=120,
                mem_mb=8192,
            )
            assert result.rc == 1, result.stderr
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
            assert "Traceback" not in result.stderr
            assert list(mount.iterdir()) == [], f"{layout}: left {list(mount.iterdir())}"
    finally:
        _umount(mount)


def test_read_only_output_directory_gives_one_line(tmp_path, big_dir) -> None:
    """A read-only tmpfs (root ignores chmod) or, elsewhere, a mode-0555 directory."""
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    mounted = _mount_tmpfs(out_dir, "ro,size=1m")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root without mount: cannot make a read-only directory")
        out_dir.chmod(0o555)
    try:
        result = run_real_cli(
            ["insert", "model.onnx", "--at", "r", "-o", str(out_dir / "out.onnx")],
            big_dir / "external",
            timeout=120,
            mem_mb=8192,
        )
        assert result.rc == 1
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert list(out_dir.iterdir()) == []
    finally:
        if mounted:
            _umount(out_dir)
        else:
            out_dir.chmod(0o755)


# --- generate_artifacts failing half-way ---------------------------------------------------


def _no_gradient_model(op: str) -> onnx.ModelProto:
    """MatMul(W) -> ``op`` (ORT 1.19 has no gradient builder for it) -> Add(b)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node(op, ["h"], ["r"], name="no_grad_node"),
            helper.make_node("Add", ["r", "b"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b"),
        ],
    )
    return finish(graph)


def _looks_complete(directory: Path) -> bool:
    names = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    return {"training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"} <= names


@pytest.mark.training
@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "over-old-artifacts"])
def test_artifacts_failing_half_way_leave_nothing_that_looks_complete(tmp_path, existing) -> None:
    pytest.importorskip("onnxruntime.training")
    from onnx_stopgrad.cli import training as _training  # noqa: F401  (the command exists)

    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    good.write_bytes(_no_gradient_model("Relu").SerializeToString())
    bad.write_bytes(_no_gradient_model("Round").SerializeToString())
    out = tmp_path / "art"
    argv = ["artifacts", "{}", "-o", str(out), "--loss", "mse", "--optimizer", "adamw"]
    if existing:
        done = run_real_cli([a.replace("{}", str(good)) for a in argv], tmp_path, timeout=180, mem_mb=16384)
        assert done.rc == 0, done.stderr
        assert _looks_complete(out)
    before = {p.name: _sha(p) for p in out.iterdir()} if existing else None

    result = run_real_cli([a.replace("{}", str(bad)) for a in argv], tmp_path, timeout=180, mem_mb=16384)
    assert result.rc == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Round" in result.stderr and "no_grad_node" in result.stderr
    if existing:  # the previous complete set is untouched
        assert {p.name: _sha(p) for p in out.iterdir()} == before
    else:
        assert not out.exists() or not _looks_complete(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_failed_external_copy_leaves_no_copied_files(tmp_path) -> None:
    """Found by the campaign: two data files, the second missing; the first was left behind."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "A"], ["s"]), helper.make_node("Add", ["s", "B"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
        [
            numpy_helper.from_array(np.ones(8, np.float32), "A"),
            numpy_helper.from_array(np.ones(8, np.float32), "B"),
        ],
    )
    model = finish(graph)
    onnx.save(
        model,
        str(src / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    proto, source_dir = load_model(src / "m.onnx")
    (src / "B").unlink()
    with pytest.raises(ModelSaveError, match="nothing was written"):
        save_model(proto, dst / "m.onnx", source_dir)
    assert list(dst.iterdir()) == []


def test_sigkill_during_in_place_rewrite_keeps_a_complete_model(big_dir, tmp_path) -> None:
    """``--in-place`` overwrites the input itself: after a kill it is the old or the new model."""
    work = tmp_path / "work"
    work.mkdir()
    source = big_dir / "inline" / "model.onnx"
    old_digest = _sha(source)
    shutil.copyfile(source, work / "model.onnx")
    argv = ["insert", "model.onnx", "--at", "r", "--in-place"]
    started = time.monotonic()
    assert run_real_cli(argv, work, timeout=120, mem_mb=8192).rc == 0
    duration = time.monotonic() - started
    new_digest = _sha(work / "model.onnx")
    assert new_digest != old_digest
    rng = random.Random(5)
    outcomes = []
    for _ in range(8):
        shutil.copyfile(source, work / "model.onnx")
        proc = _start(argv, work)
        time.sleep(rng.uniform(0.2, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        digest = _sha(work / "model.onnx")
        assert digest in (old_digest, new_digest), "the model was left truncated or mixed"
        leftovers = list(work.glob(".*.tmp"))
        outcomes.append(("new" if digest == new_digest else "old", len(leftovers)))
        for leftover in leftovers:
            leftover.unlink()
    print(f"\nsigkill --in-place: {outcomes}")


# --- train: SIGKILL while the checkpoint is written -------------------------------------------


def _wide_model() -> onnx.ModelProto:
    """x[32, 2048] -> MatMul W[2048, 2048] (16 MiB) -> Add b -> y: a checkpoint worth killing."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "b"], ["y"], name="add"),
        ],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 2048])],
        [
            numpy_helper.from_array((rng.standard_normal((2048, 2048)) * 0.01).astype(np.float32), "W"),
            numpy_helper.from_array(np.zeros(2048, np.float32), "b"),
        ],
    )
    return finish(graph)


def _wait_for(pattern: str, directory: Path, proc: subprocess.Popen, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if any(directory.glob(pattern)):
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.large
@pytest.mark.training
def test_sigkill_while_train_saves_the_checkpoint_keeps_a_loadable_one(tmp_path) -> None:
    """Kills aimed at the checkpoint write (the moment its temp file appears, plus 0-40 ms)."""
    api = pytest.importorskip("onnxruntime.training.api")
    (tmp_path / "wide.onnx").write_bytes(_wide_model().SerializeToString())
    rng = np.random.default_rng(2)
    np.savez(
        tmp_path / "data.npz",
        x=rng.standard_normal((64, 2048)).astype(np.float32),
        target=rng.standard_normal((64, 2048)).astype(np.float32),
    )
    built = run_real_cli(
        ["artifacts", "wide.onnx", "-o", "art", "--loss", "mse", "--optimizer", "sgd"],
        tmp_path,
        timeout=300,
        mem_mb=16384,
    )
    assert built.rc == 0, built.stderr
    pristine = tmp_path / "art"
    old = _sha(pristine / "checkpoint")
    argv = ["train", "work", "--data", str(tmp_path / "data.npz"), "--epochs", "1"]
    kill_rng = random.Random(8)
    outcomes = []
    for _ in range(5):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        proc = _start(argv, tmp_path)
        seen = _wait_for(".checkpoint.*.tmp", work, proc, 120)
        time.sleep(kill_rng.uniform(0, 0.04))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        digest = _sha(work / "checkpoint")
        api.CheckpointState.load_checkpoint(str(work / "checkpoint"))  # complete, whichever it is
        leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
        assert all(name.startswith(".checkpoint.") for name in leftovers), leftovers
        outcomes.append(("old" if digest == old else "new", seen, len(leftovers)))
    print(f"\nsigkill train checkpoint (state, temp file seen, temp files left): {outcomes}")


@pytest.mark.training
@pytest.mark.parametrize("name", ["training_model.onnx", "eval_model.onnx"])
def test_artifacts_never_overwrite_the_input_model(tmp_path, name) -> None:
    pytest.importorskip("onnxruntime.training")
    model = tmp_path / name
    model.write_bytes(_no_gradient_model("Relu").SerializeToString())
    before = _sha(model)
    result = run_real_cli(
        ["artifacts", name, "-o", ".", "--loss", "mse"], tmp_path, timeout=180, mem_mb=16384
    )
    assert "Traceback" not in result.stderr
    assert _sha(model) == before, "the input model was overwritten"
    assert result.rc == 1 and result.stderr.startswith("error: ")


@pytest.mark.training
def test_export_never_overwrites_its_artifacts(tmp_path) -> None:
    pytest.importorskip("onnxruntime.training")
    (tmp_path / "m.onnx").write_bytes(_no_gradient_model("Relu").SerializeToString())
    built = run_real_cli(
        ["artifacts", "m.onnx", "-o", "art", "--loss", "mse"], tmp_path, timeout=180, mem_mb=16384
    )
    assert built.rc == 0, built.stderr
    before = {p.name: _sha(p) for p in (tmp_path / "art").iterdir()}
    for name in ("eval_model.onnx", "training_model.onnx", "checkpoint"):
        result = run_real_cli(["export", "art", "-o", f"art/{name}"], tmp_path, timeout=180, mem_mb=16384)
        assert "Traceback" not in result.stderr
        assert {p.name: _sha(p) for p in (tmp_path / "art").iterdir()} == before, f"-o art/{name}"
