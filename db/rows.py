"""What every output row (results, reports) can do: name its fields, become JSON."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any


class OutputRow:
    """Mixin for frozen dataclasses whose field names are documented output names."""

    __slots__ = ()

    @classmethod
    def field_names(cls) -> list[str]:
        """Column order for CSV, tables and JSON."""
        return list(_names(cls))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: timestamps as ISO 8601 UTC strings."""
        out: dict[str, Any] = {}
        for name in _names(type(self)):
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


# Field names by class, looked up once: a CSV of thousands of rows asked on every row.
_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names
