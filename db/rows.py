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
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: timestamps as ISO 8601 UTC strings."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out
