"""``to_dict()`` for the frozen report dataclasses: every field by name, ready for JSON."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["ReportFields", "json_ready"]


def json_ready(value: Any) -> Any:
    """``value`` with tuples turned into lists and paths into strings, recursively."""
    if isinstance(value, (tuple, list)):
        return [json_ready(item) for item in value]
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class ReportFields:
    """Mixin for a report dataclass: ``to_dict()`` gives every field, ready for JSON."""

    def to_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))  # type: ignore[call-overload]
