"""Atomic writes: the whole file or nothing, and no temporary file left behind."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from worker.pacs.files import publish_new, write_atomically
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


# publish_new: the receiver's write, which never replaces a file (issue 13, item 1).

LONGEST_UID = "1." + "2" * 62  # a UID is at most 64 characters


def _visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_publish_new_writes_a_new_instance_at_its_own_name(tmp_path: Path) -> None:
    target = tmp_path / "inbox" / "1.2.3" / "1.2.3.4.dcm"
    assert publish_new(target, b"first") == target
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == [target.name], "no temporary left"


def test_publish_new_keeps_other_bytes_beside_never_over_the_first(tmp_path: Path) -> None:
    target = tmp_path / "1.2.3.4.dcm"
    publish_new(target, b"first")
    beside = publish_new(target, b"corrected")
    digest = hashlib.sha256(b"corrected").hexdigest()
    assert beside == tmp_path / f"1.2.3.4.{digest[:12]}.dcm"
    assert _visible(tmp_path) == {target.name: b"first", beside.name: b"corrected"}
    assert ignored_reason(Path("1.2.3") / beside.name) is None, "the watcher takes it"


def test_publish_new_records_an_identical_resend_beside_once(tmp_path: Path) -> None:
    target = tmp_path / "1.2.3.4.dcm"
    publish_new(target, b"same")
    again = publish_new(target, b"same")
    assert again != target
    assert publish_new(target, b"same") == again, "a third identical copy adds nothing"
    assert _visible(tmp_path) == {target.name: b"same", again.name: b"same"}


def test_publish_new_numbers_a_name_held_by_other_bytes(tmp_path: Path) -> None:
    target = tmp_path / "1.2.3.4.dcm"
    digest = hashlib.sha256(b"second").hexdigest()
    squatter = tmp_path / f"1.2.3.4.{digest[:12]}.dcm"
    target.write_bytes(b"first")
    squatter.write_bytes(b"not the second")
    stored = publish_new(target, b"second")
    assert stored == tmp_path / f"1.2.3.4.{digest[:12]}.2.dcm"
    assert target.read_bytes() == b"first"
    assert squatter.read_bytes() == b"not the second"


def test_publish_new_never_replaces_a_file_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "1.2.3.4.dcm"
    real_link = os.link

    def racing_link(source: str, destination: Path) -> None:
        if Path(destination) == target and not target.exists():
            target.write_bytes(b"another writer's instance")  # arrives between the steps
        real_link(source, destination)

    monkeypatch.setattr(os, "link", racing_link)
    stored = publish_new(target, b"mine")
    assert target.read_bytes() == b"another writer's instance"
    assert stored.read_bytes() == b"mine"


def test_publish_new_names_of_the_longest_uid_fit_and_stay_visible(tmp_path: Path) -> None:
    target = tmp_path / LONGEST_UID / f"{LONGEST_UID}.dcm"
    for content in (b"a", b"b", b"c", b"a"):
        publish_new(target, content)
    names = sorted(_visible(target.parent))
    assert len(names) == 4
    for name in names:
        assert len(name.encode()) <= 255
        assert name.startswith(LONGEST_UID + ".")
        assert name.endswith(".dcm")
        assert ignored_reason(Path(LONGEST_UID) / name) is None


def test_publish_new_that_fails_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(source: str, destination: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(os, "link", full_disk)
    with pytest.raises(OSError, match="No space left"):
        publish_new(tmp_path / "1.2.3.4.dcm", b"data")
    assert list(tmp_path.iterdir()) == []
