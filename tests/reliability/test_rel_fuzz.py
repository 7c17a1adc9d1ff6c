"""Fuzzing the CLI and the Python API with mutated models (short budgets for `make test`).

Seeds: hand-built MLPs (one with external data, one already stopped), If and Loop models and
a torch export. Mutations: structure-aware protobuf edits drawn by hypothesis (cycles,
dangling reads, duplicate names, absurd dims and types, hostile external-data locations,
deep nesting, ...) and raw byte flips/truncations/insertions. Every run must be clean (see
rel_harness.judge): a valid output or one ``error:`` line and exit 1; never a traceback,
hang, memory blow-up, changed input or file left behind. The long version is
scripts/fuzz_campaign.py.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_harness import Tally, fuzz_one, judge, prepare_case, run_real_cli
from rel_mutate import HypothesisDraw, RandomDraw, mutate_bytes

_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
_counter = itertools.count()


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fuzz(forkserver, corpus, seeds, fuzz_root, data, structured: bool, tally: Tally) -> None:
    draw = HypothesisDraw(data)
    entry = draw.choice(corpus)
    label, result, bad, notes = fuzz_one(
        forkserver,
        fuzz_root,
        f"c{next(_counter)}",
        seeds[entry.name],
        entry.targets,
        draw,
        structured=structured,
    )
    tally.add(label, result, bad, notes)
    assert not bad, f"{entry.name}: {label}: {bad}"


_TALLIES = {"structure": Tally(), "bytes": Tally()}


@_SETTINGS
@given(data=st.data())
def test_structure_mutations_end_cleanly(forkserver, corpus, seeds, fuzz_root, data) -> None:
    _fuzz(forkserver, corpus, seeds, fuzz_root, data, True, _TALLIES["structure"])


@_SETTINGS
@given(data=st.data())
def test_byte_mutations_end_cleanly(forkserver, corpus, seeds, fuzz_root, data) -> None:
    _fuzz(forkserver, corpus, seeds, fuzz_root, data, False, _TALLIES["bytes"])


def test_fuzz_figures(forkserver, corpus, seeds, fuzz_root, capsys) -> None:
    """Prints what the two fuzz tests above did (run with -s to see it); run on its own,
    it fuzzes 20 structured cases itself, so it always checks something."""
    if not any(tally.cases for tally in _TALLIES.values()):
        rng = random.Random(11)
        for index in range(20):
            entry = rng.choice(corpus)
            label, result, bad, notes = fuzz_one(
                forkserver,
                fuzz_root,
                f"f{index}",
                seeds[entry.name],
                entry.targets,
                RandomDraw(rng),
                structured=True,
            )
            _TALLIES["structure"].add(label, result, bad, notes)
    ran = {name: tally for name, tally in _TALLIES.items() if tally.cases}
    assert ran
    for name, tally in ran.items():
        with capsys.disabled():
            print(f"\nfuzz {name}: {tally.summary()}")
        assert tally.crashes == 0 and tally.data_lost == 0, tally.failures[:3]


def test_models_the_checker_rejects_give_outputs_no_less_valid(forkserver, corpus, seeds, fuzz_root) -> None:
    """Garbage in, no more garbage out: a written output passes onnx.checker, or fails it
    for the same reason as its input (``judge`` counts any other result as bad)."""
    rng = random.Random(7)
    passed_through = []
    for index in range(60):
        entry = rng.choice(corpus)
        _, _result, bad, notes = fuzz_one(
            forkserver,
            fuzz_root,
            f"g{index}",
            seeds[entry.name],
            entry.targets,
            RandomDraw(rng),
            structured=True,
        )
        assert not bad, bad
        passed_through += notes
    assert all("as does the input" in note for note in passed_through), passed_through[:3]


def test_real_subprocess_runs_end_cleanly(corpus, seeds, fuzz_root) -> None:
    """A few mutated models through ``python -m onnx_stopgrad`` (time and address-space caps)."""
    rng = random.Random(3)
    for index in range(6):
        entry = corpus[index % len(corpus)]
        files = dict(seeds[entry.name])
        model = mutate_bytes(files.pop("model.onnx"), RandomDraw(rng))
        case = prepare_case(fuzz_root, f"real{index}", model, files)
        out = case.out_dir / "out.onnx"
        result = run_real_cli(
            ["insert", "model.onnx", "--at", entry.targets[0], "-o", str(out)],
            case.directory,
            timeout=60,
            mem_mb=3072,
        )
        bad, _ = judge(result, case, out)
        assert not bad, bad
