"""The long fuzzing campaign for the onnx-stopgrad CLI and Python API (not run in CI).

The same seeds, mutators, fork server and judge as tests/reliability/test_rel_fuzz.py,
for as long as you like. Half the cases mutate protobuf fields (structure-aware), half
mutate raw bytes. Each case runs one command (insert, insert --consumer, list, remove,
remove --to-identity, or the Python API) in a forked child capped in time and memory.

    python scripts/fuzz_campaign.py --minutes 5
    python scripts/fuzz_campaign.py --minutes 120 --seed 7 --keep-failures /tmp/fuzz-failures

Prints the figures: cases, clean outputs, clean errors, crashes, data lost, inputs the
checker rejects that were rewritten anyway (garbage through), slowest case, peak RSS of
a case. Exit status 1 when any case crashed or lost data. A failing case's directory is
kept (``--keep-failures``) with the model that caused it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "reliability")]

from rel_corpus import build_corpus, write_model  # noqa: E402
from rel_harness import COMMAND_KINDS, ForkServer, Tally, cli_ready, fuzz_one  # noqa: E402
from rel_mutate import RandomDraw  # noqa: E402


def _seeds(root: Path) -> tuple[list, dict[str, dict[str, bytes]]]:
    corpus = build_corpus()
    files = {}
    for entry in corpus:
        directory = root / "seeds" / entry.name
        write_model(entry, directory)
        files[entry.name] = {p.name: p.read_bytes() for p in directory.iterdir()}
    return corpus, files


def _code_stamp() -> float:
    """Latest modification time of the package's sources (the tree may change under a campaign)."""
    return max(p.stat().st_mtime for p in (REPO / "onnx_stopgrad").rglob("*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to fuzz [5]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=0, help="stop after this many cases (0: time only)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case [20]")
    parser.add_argument("--mem-mb", type=int, default=1024, help="address space a case may add [1024]")
    parser.add_argument("--keep-failures", type=Path, default=None, help="copy failing cases here")
    parser.add_argument("--verbose", action="store_true", help="print every failure and note")
    parser.add_argument(
        "--artifacts", action="store_true", help="also run 'artifacts' (ONNX Runtime training; ~1 s a case)"
    )
    args = parser.parse_args(argv)

    reason = cli_ready()
    if reason:
        print(f"cannot fuzz: {reason}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="stopgrad-campaign-"))
    corpus, seeds = _seeds(root)
    server = ForkServer(preload_training=args.artifacts)
    kinds = COMMAND_KINDS + (("artifacts",) * 2 if args.artifacts else ())
    rng = random.Random(args.seed)
    tallies = {"structure": Tally(), "bytes": Tally()}
    mutations: Counter = Counter()
    commands: Counter = Counter()
    deadline = time.monotonic() + args.minutes * 60
    index = 0
    stamp = _code_stamp()
    restarts = 0
    try:
        while time.monotonic() < deadline and (not args.cases or index < args.cases):
            if index % 200 == 0 and _code_stamp() != stamp:  # a preloaded old module would be stale
                server.close()
                server = ForkServer(preload_training=args.artifacts)
                stamp, restarts = _code_stamp(), restarts + 1
            entry = rng.choice(corpus)
            structured = index % 2 == 0
            label, result, bad, notes = fuzz_one(
                server,
                root,
                f"c{index}",
                seeds[entry.name],
                entry.targets,
                RandomDraw(rng),
                structured=structured,
                timeout=args.timeout,
                mem_mb=args.mem_mb,
                kinds=kinds,
            )
            tallies["structure" if structured else "bytes"].add(label, result, bad, notes)
            mutations.update(label.split()[1].split("+"))
            commands[
                (label.split()[2], "ok" if result.rc == 0 and not bad else "error" if not bad else "crash")
            ] += 1
            if bad:
                print(f"FAIL {entry.name}: {label}: {bad}", flush=True)
                if args.keep_failures:
                    shutil.copytree(root / "cases" / f"c{index}", args.keep_failures / f"c{index}")
            elif notes and args.verbose:
                print(f"note {entry.name}: {label}: {notes[0]}")
            index += 1
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)

    total = Tally()
    for tally in tallies.values():
        for name in ("cases", "clean_ok", "clean_error", "crashes", "data_lost", "notes"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.max_seconds = max(total.max_seconds, tally.max_seconds)
        total.max_rss_kb = max(total.max_rss_kb, tally.max_rss_kb)
    print(
        f"fuzz campaign: {args.minutes:g} min, seed {args.seed}, {len(corpus)} seed models, "
        f"fork server restarted {restarts} time(s) for changed sources"
    )
    for name, tally in tallies.items():
        print(f"  {name:9s}: {tally.summary()}")
    print(f"  total    : {total.summary()}")
    print(f"  mutations applied: {dict(mutations.most_common())}")
    per_kind = {}
    for (kind, outcome), count in sorted(commands.items()):
        per_kind.setdefault(kind, {})[outcome] = count
    print(f"  commands run (outcome counts): {per_kind}")
    return 1 if total.crashes or total.data_lost else 0


if __name__ == "__main__":
    sys.exit(main())
