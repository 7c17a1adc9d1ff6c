"""Fixtures for the reliability tests: the seed corpus and a warm fork server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rel_corpus import CorpusModel, build_corpus, write_model
from rel_harness import ForkServer, cli_ready


@pytest.fixture(scope="session")
def corpus() -> list[CorpusModel]:
    return build_corpus()


@pytest.fixture(scope="session")
def seeds(corpus: list[CorpusModel], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Each corpus model as the files a user has on disk: ``{file name: bytes}``."""
    root = tmp_path_factory.mktemp("seeds")
    files = {}
    for entry in corpus:
        directory = root / entry.name
        write_model(entry, directory)
        files[entry.name] = {p.name: p.read_bytes() for p in directory.iterdir()}
    return files


@pytest.fixture(scope="session")
def forkserver() -> Iterator[ForkServer]:
    reason = cli_ready()
    if reason:
        pytest.skip(reason)
    server = ForkServer()
    yield server
    server.close()
