"""Shared pytest configuration.

Tests marked ``large`` (multi-GB files, minutes) run only when ONNX_STOPGRAD_LARGE_TESTS=1,
which `make test` sets; `make test-fast` leaves them out.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ONNX_STOPGRAD_LARGE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="large test: set ONNX_STOPGRAD_LARGE_TESTS=1 (make test does)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)
