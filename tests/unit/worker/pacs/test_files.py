"""Atomic writes: the whole file or nothing, and no temporary file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.pacs.files import write_atomically
from worker.watcher.names import ignored_reason


def test_the_file_appears_whole_in_a_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "inbox" / "1.2.3" / "1.2.3.4.dcm"
    write_atomically(target, b"DICM" * 1000)
    assert target.read_bytes() == b"DICM" * 1000
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_second_write_replaces_the_first(tmp_path: Path) -> None:
    target = tmp_path / "a.dcm"
    write_atomically(target, b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.dcm"
    target.mkdir()  # the rename cannot replace a folder
    with pytest.raises(OSError, match=r"a\.dcm"):
        write_atomically(target, b"data")
    assert list(tmp_path.iterdir()) == [target]
    assert list(target.iterdir()) == []


def test_the_temporary_name_is_one_the_watcher_ignores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = Path.replace

    def spy(self: Path, target: Path) -> Path:
        seen.append(self.name)
        return original(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    write_atomically(tmp_path / "1.2.3.dcm", b"x")
    assert len(seen) == 1
    assert seen[0].startswith(".1.2.3.dcm.")
    assert ignored_reason(Path("1.2") / seen[0]) is not None
