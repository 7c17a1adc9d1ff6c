"""Malicious model shapes: each is refused with one clean line, nothing outside is touched.

Runs go through the fork server (the real CLI code, isolated per run, capped in time and
memory, every ``open`` of a sentinel outside the model directory recorded); one test runs
``python -m onnx_stopgrad`` itself to show the fork server judges what users see.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper
from rel_corpus import CorpusModel, write_model
from rel_harness import Case, ForkServer, RunResult, judge, prepare_case, run_real_cli
from rel_mutate import OUTSIDE_NAME

COMMANDS = ("insert", "list", "remove")


def _argv(command: str, target: str, out: Path) -> list[str]:
    if command == "insert":
        return ["insert", "model.onnx", "--at", target, "-o", str(out)]
    if command == "remove":
        return ["remove", "model.onnx", "-o", str(out)]
    return ["list", "model.onnx", "--json"]


def _run(
    server: ForkServer, case: Case, command: str, target: str = "h1r", mem_mb: int = 1024
) -> tuple[RunResult, list[str]]:
    out = case.out_dir / "out.onnx"
    result = server.run(
        _argv(command, target, out), case.directory, timeout=30, mem_mb=mem_mb, watch=case.watch
    )
    bad, _ = judge(result, case, None if command == "list" else out)
    return result, bad


def _assert_refused(
    server: ForkServer, case: Case, command: str, target: str = "h1r", mem_mb: int = 1024
) -> RunResult:
    result, bad = _run(server, case, command, target, mem_mb)
    assert not bad, bad
    assert result.rc == 1, f"{command} accepted a malicious model: {result.stdout[:300]}"
    assert not any(case.out_dir.iterdir()), "a refused run wrote something"
    return result


def _mlp(corpus: list[CorpusModel]) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(next(e for e in corpus if e.name == "mlp").proto)
    return model


def _case(tmp_path: Path, model: onnx.ModelProto, name: str = "case", **sidecars: bytes) -> Case:
    return prepare_case(tmp_path, name, model.SerializeToString(), dict(sidecars))


# --- broken graphs -----------------------------------------------------------------------


def _cycle(model: onnx.ModelProto) -> None:
    model.graph.node[0].input[0] = "y"  # mm1 reads the graph output: y -> ... -> y


def _dangling(model: onnx.ModelProto) -> None:
    model.graph.node[2].input[0] = "made_by_nobody"


def _two_producers(model: onnx.ModelProto) -> None:
    model.graph.node[3].output[0] = "h1r"  # mm2 writes h1r, which relu1 writes too


def _duplicate_initializer(model: onnx.ModelProto) -> None:
    extra = model.graph.initializer.add()
    extra.CopyFrom(model.graph.initializer[0])  # a second "W1"


BROKEN = {
    "cycle": _cycle,
    "dangling": _dangling,
    "two_producers": _two_producers,
    "duplicate_initializer": _duplicate_initializer,
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_broken_graph_is_refused(forkserver, corpus, tmp_path, breakage, command) -> None:
    model = _mlp(corpus)
    BROKEN[breakage](model)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)  # the breakage is real
    _assert_refused(forkserver, _case(tmp_path, model), command)


# --- deep nesting ------------------------------------------------------------------------


def _nested(depth: int) -> onnx.ModelProto:
    """``depth`` If nodes, each inside the previous one's then-branch (built without copies:
    protobuf's own copy refuses nesting this deep)."""
    model = onnx.ModelProto(ir_version=10)
    model.opset_import.add(domain="", version=17)
    model.graph.name = "top"
    model.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    graph = model.graph
    for level in range(depth):
        graph.node.add(op_type="If", input=["c"], output=[f"y{level}"], name=f"if{level}")
        graph.output.add(name=f"y{level}")
        sub = graph.node[0].attribute.add(name="then_branch", type=AttributeProto.GRAPH).g
        graph.node[0].attribute.add(name="else_branch", type=AttributeProto.GRAPH).g.name = f"e{level}"
        sub.name = f"g{level}"
        graph = sub
    graph.node.add(op_type="Identity", input=["c"], output=["leaf"], name="leaf")
    graph.output.add(name="leaf")
    return model


@pytest.mark.parametrize("command", COMMANDS)
def test_file_nested_hundreds_deep_is_refused(forkserver, tmp_path, command) -> None:
    result = _assert_refused(forkserver, _case(tmp_path, _nested(300)), command, target="leaf")
    assert "model.onnx" in result.stderr


@pytest.mark.parametrize("depth", [300, 2000])
def test_api_on_a_proto_nested_deep_raises_no_recursion_error(depth: int) -> None:
    """A ModelProto built in memory can nest deeper than any file: one clear error, no
    RecursionError."""
    from onnx_stopgrad import insert_stop_gradient, list_stop_gradients
    from onnx_stopgrad.analysis import analyze
    from onnx_stopgrad.errors import InvalidModelError

    model = _nested(depth)
    calls = (
        lambda: list_stop_gradients(model),
        lambda: insert_stop_gradient(model, "leaf"),
        lambda: analyze(model, use_onnxruntime=False),
    )
    for call in calls:
        with pytest.raises(InvalidModelError, match="nested more than"):
            call()


# --- absurd sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_dimension_of_two_to_the_62_stays_small(forkserver, corpus, tmp_path, command) -> None:
    """A shape claiming 2^62 elements must never be allocated: clean outcome in 512 MiB."""
    model = _mlp(corpus)
    model.graph.value_info[0].type.tensor_type.shape.dim[0].dim_value = 2**62
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2**62
    model.graph.initializer[1].dims[0] = 2**62  # b1: 8 floats of data, claims 2^62
    case = _case(tmp_path, model)
    _result, bad = _run(forkserver, case, command, target="h1r", mem_mb=512)
    assert not bad, bad


# --- external data outside the model directory -------------------------------------------


def _external_mlp(corpus: list[CorpusModel], tmp_path: Path) -> tuple[onnx.ModelProto, bytes]:
    entry = next(e for e in corpus if e.name == "mlp_external")
    seed = tmp_path / "seed"
    write_model(entry, seed)
    return onnx.load(str(seed / "model.onnx"), load_external_data=False), (seed / "weights.bin").read_bytes()


def _locations(root: Path) -> dict[str, str]:
    return {
        "parent": f"../{OUTSIDE_NAME}",
        "grandparent": f"../../{OUTSIDE_NAME}",
        "absolute": str(root / OUTSIDE_NAME),
        "etc_passwd": "../../../../../../../../etc/passwd",
        "absolute_etc": "/etc/passwd",
        "dotdot_in_middle": f"sub/../../{OUTSIDE_NAME}",
        "symlink": "link_outside.bin",
        "nul_byte": "weights.bin\x00../../etc/passwd",
        "symlink_loop": "loop_a",
        "directory_itself": ".",
        "empty": "",
    }


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", sorted(_locations(Path("/x"))))
def test_external_data_outside_is_refused_and_never_opened(
    forkserver, corpus, tmp_path, kind, command
) -> None:
    model, weights = _external_mlp(corpus, tmp_path)
    location = _locations(tmp_path)[kind]
    tensor = model.graph.initializer[0]
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location
    case = _case(tmp_path, model, **{"weights.bin": weights})
    os.symlink("loop_b", case.directory / "loop_a")
    os.symlink("loop_a", case.directory / "loop_b")
    case.before = {**case.before, "loop_a": "link:loop_b", "loop_b": "link:loop_a"}
    result = _assert_refused(forkserver, case, command, target="h1b")
    assert "external data" in result.stderr


def test_output_side_symlink_does_not_write_outside(corpus, tmp_path) -> None:
    """Copying external data next to a new output never follows a symlinked folder out."""
    from onnx_stopgrad._io import load_model, save_model
    from onnx_stopgrad.errors import ModelSaveError

    entry = next(e for e in corpus if e.name == "mlp_external")
    src = tmp_path / "src"
    src.mkdir()
    model = onnx.ModelProto()
    model.CopyFrom(entry.proto)
    (src / "sub").mkdir()
    onnx.save(
        model, str(src / "model.onnx"), save_as_external_data=True, location="sub/w.bin", size_threshold=0
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "sub").symlink_to(outside)
    proto, source_dir = load_model(src / "model.onnx")
    with pytest.raises(ModelSaveError, match="outside"):
        save_model(proto, out_dir / "model.onnx", source_dir)
    assert list(outside.iterdir()) == []
    assert not (out_dir / "model.onnx").exists()


def test_real_cli_subprocess_matches_the_fork_server(forkserver, corpus, tmp_path) -> None:
    """The same hostile model through ``python -m onnx_stopgrad``: one line, exit 1."""
    model, weights = _external_mlp(corpus, tmp_path)
    model.graph.initializer[0].external_data[0].value = "/etc/passwd"
    case = _case(tmp_path, model, **{"weights.bin": weights})
    out = case.out_dir / "out.onnx"
    real = run_real_cli(["insert", "model.onnx", "--at", "h1b", "-o", str(out)], case.directory)
    bad, _ = judge(real, case, out)
    assert not bad, bad
    assert real.rc == 1 and real.stderr.count("\n") == 1
    forked, _ = _run(forkserver, case, "insert", target="h1b")
    assert forked.stderr == real.stderr


# --- names that are not UTF-8 --------------------------------------------------------------

_NON_UTF8_NAMES = {
    # A node input, a node output, a node name, a graph output name: same length as the original.
    "tensor": (b"h1r_stop", b"h1\xd0\xff\xfe\xfd_p"),
    "node": (b"stop1", b"st\xa9\xfbp"),
    "output": (b"\n\x01y", b"\n\x01\xfb"),
    "initializer": (b"B\x02W2", b"B\x02\xfb2"),
    "producer": (b"reliability-corpus", b"reli\xc9bility-corpus"),
}


@pytest.mark.parametrize("command", [*COMMANDS, "analyze", "show", "artifacts"])
@pytest.mark.parametrize("where", sorted(_NON_UTF8_NAMES))
def test_names_that_are_not_utf8_are_refused(forkserver, corpus, tmp_path, command, where) -> None:
    """protobuf does not check proto2 strings when parsing: such names come back as bytes."""
    if command == "artifacts":
        pytest.importorskip("onnxruntime.training")
    model = next(e for e in corpus if e.name == "mlp_stopped").proto
    old, new = _NON_UTF8_NAMES[where]
    data = model.SerializeToString().replace(old, new)
    assert data != model.SerializeToString() and len(data) == len(model.SerializeToString())
    case = prepare_case(tmp_path, "utf8", data, {})
    if command in COMMANDS:
        result, bad = _run(forkserver, case, command, target="h2")
    else:
        argv = {
            "analyze": ["analyze", "model.onnx", "--static"],
            "show": ["show", "model.onnx", "-o", str(case.out_dir / "g.dot")],
            "artifacts": ["artifacts", "model.onnx", "-o", str(case.out_dir / "art"), "--loss", "mse"],
        }[command]
        result = forkserver.run(argv, case.directory, watch=case.watch, timeout=120, mem_mb=4096)
        written = {
            "analyze": None,
            "show": case.out_dir / "g.dot",
            "artifacts": case.out_dir / "art" / "training_model.onnx",
        }[command]
        bad, _ = judge(result, case, written, onnx_output=command == "artifacts")
    assert not bad, bad


@pytest.mark.parametrize("command", COMMANDS)
def test_external_data_location_that_is_not_utf8_is_refused(forkserver, corpus, tmp_path, command) -> None:
    """Found by the campaign: protobuf returns such a location as bytes (TypeError in _io)."""
    model, weights = _external_mlp(corpus, tmp_path)
    data = model.SerializeToString().replace(b"weights.bin", b"weights\xd0\xff\xfe\xfd", 1)
    case = prepare_case(tmp_path, "loc_utf8", data, {"weights.bin": weights})
    result = _assert_refused(forkserver, case, command, target="h1b")
    assert "UTF-8" in result.stderr


# --- warnings on stderr before the error line --------------------------------------------------

_WARNING_LINE = (
    "onnx_stopgrad/analysis/_shapes.py logs a warning ('shape inference failed ...; using the "
    "shapes stored in the model') that Python's last-resort handler prints on stderr, so the "
    "user gets two lines; found by the fuzz campaign (a graph output renamed to an int64 initializer)"
)


def test_analyze_error_is_one_line_even_when_shape_inference_fails(forkserver, corpus, tmp_path) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(next(e for e in corpus if e.name == "loop").proto)
    model.graph.output[0].name = "trip"  # int64 initializer, declared FLOAT [2, 4]
    case = _case(tmp_path, model)
    result = forkserver.run(["analyze", "model.onnx", "--static"], case.directory, watch=case.watch)
    bad, _ = judge(result, case, None)
    assert result.rc == 1
    assert not bad, bad


# --- artifacts reads the weights: hostile offsets and lengths ------------------------------
# load_model checks every external tensor's file, offset and length (stat only) first.


@pytest.mark.training
@pytest.mark.parametrize(
    "key,value",
    [
        ("length", str(2**40)),
        ("length", "-5"),
        ("offset", "abc"),
        ("offset", str(2**62)),
        ("location", "missing.bin"),
        ("location", "x" * 5000),
    ],
)
def test_artifacts_with_hostile_offset_or_length_is_one_line(
    forkserver, corpus, tmp_path, key, value
) -> None:
    pytest.importorskip("onnxruntime.training")
    model, weights = _external_mlp(corpus, tmp_path)
    tensor = model.graph.initializer[0]
    entry = next((e for e in tensor.external_data if e.key == key), None) or tensor.external_data.add(key=key)
    entry.value = value
    case = _case(tmp_path, model, **{"weights.bin": weights})
    out = case.out_dir / "art"
    result = forkserver.run(
        ["artifacts", "model.onnx", "-o", str(out), "--loss", "mse"],
        case.directory,
        timeout=120,
        mem_mb=4096,
        watch=case.watch,
    )
    bad, _ = judge(result, case, None)
    assert result.rc == 1 and not bad, bad
    assert not out.exists()


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", " 12", "-0", "0x10", "1e3", ""])
def test_external_data_offset_that_is_not_a_plain_number_is_refused(
    forkserver, corpus, tmp_path, value
) -> None:
    """'²'.isdigit() is True but int('²') raises: only ASCII digits are byte counts."""
    model, weights = _external_mlp(corpus, tmp_path)
    tensor = model.graph.initializer[0]
    entry = next((e for e in tensor.external_data if e.key == "offset"), None) or tensor.external_data.add(
        key="offset"
    )
    entry.value = value
    case = _case(tmp_path, model, **{"weights.bin": weights})
    result = _assert_refused(forkserver, case, "list")
    assert "offset" in result.stderr


def test_analyze_on_a_loop_without_body_is_one_line(forkserver, corpus, tmp_path) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(next(e for e in corpus if e.name == "loop").proto)
    model.graph.node[1].op_type = "Loop"  # Relu -> Loop: no body, one input
    case = _case(tmp_path, model)
    result = forkserver.run(["analyze", "model.onnx", "--static"], case.directory, watch=case.watch)
    bad, _ = judge(result, case, None)
    assert not bad, bad


# --- an output named like the model's own external data ------------------------------------


@pytest.mark.parametrize("output", ["weights.bin", "./weights.bin", "out/weights.bin", "link_to_weights.bin"])
def test_output_over_the_models_external_data_is_refused(forkserver, corpus, tmp_path, output) -> None:
    """Found in review: ``insert model.onnx -o weights.bin`` replaced the input's weights."""
    model, weights = _external_mlp(corpus, tmp_path)
    case = _case(tmp_path, model, **{"weights.bin": weights})
    (case.directory / "link_to_weights.bin").symlink_to("weights.bin")
    case.before = {**case.before, "link_to_weights.bin": "link:weights.bin"}
    result = forkserver.run(
        ["insert", "model.onnx", "--at", "h1b", "-o", output], case.directory, watch=case.watch
    )
    bad, _ = judge(result, case, None)
    assert not bad, bad
    assert result.rc == 1 and "external data" in result.stderr
    assert (case.directory / "weights.bin").read_bytes() == weights


@pytest.mark.training
def test_artifacts_external_tensor_with_non_utf8_name_is_one_line(forkserver, corpus, tmp_path) -> None:
    pytest.importorskip("onnxruntime.training")
    model, weights = _external_mlp(corpus, tmp_path)
    data = model.SerializeToString().replace(b"B\x02W2", b"B\x02\xfb2")
    assert data != model.SerializeToString()
    case = prepare_case(tmp_path, "ext_utf8", data, {"weights.bin": weights})
    result = forkserver.run(
        ["artifacts", "model.onnx", "-o", str(case.out_dir / "art"), "--loss", "mse"],
        case.directory,
        watch=case.watch,
        timeout=120,
        mem_mb=4096,
    )
    bad, _ = judge(result, case, None)
    assert not bad, bad
