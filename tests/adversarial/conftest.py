"""Hostile and racing input: every test here reproduces an attack or an unlucky race."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/adversarial, so `-m adversarial` runs them alone."""
    for item in items:
        if "tests/adversarial/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.adversarial)
