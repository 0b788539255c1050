"""Which inbox paths are candidate scans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.watcher.names import ignored_reason, resolves_inside


@pytest.mark.parametrize(
    "name",
    [
        "chest.dcm",
        "STUDY/SERIES/IM0001",
        "x.jpeg",
        "a.b.c.png",
        "name with spaces.dcm",
        "partner.dcm",  # "part" inside a name is fine
    ],
)
def test_scan_names_are_candidates(name: str) -> None:
    assert ignored_reason(Path(name)) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("chest.dcm.part", "temporary"),
        ("chest.dcm.PART", "temporary"),
        ("chest.tmp", "temporary"),
        ("chest.dcm.partial", "temporary"),
        ("chest.dcm.crdownload", "temporary"),
        ("chest.dcm~", "ends with ~"),
        (".chest.dcm.Xy12Ab", "hidden name"),  # rsync's temporary file
        (".DS_Store", "hidden name"),
        ("STUDY/.staging/chest.dcm", "hidden folder .staging"),
        (".snapshot/hourly.0/chest.dcm", "hidden folder .snapshot"),
        ("Thumbs.db", "desktop litter"),
    ],
)
def test_temporary_and_hidden_names_are_ignored(name: str, reason: str) -> None:
    found = ignored_reason(Path(name))
    assert found is not None
    assert reason in found


def test_a_symlinked_folder_pointing_out_of_the_inbox_does_not_resolve_inside(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    outside = tmp_path / "outside"
    (inbox / "real").mkdir(parents=True)
    outside.mkdir()
    (inbox / "escape").symlink_to(outside, target_is_directory=True)
    (inbox / "inner").symlink_to(inbox / "real", target_is_directory=True)
    root = os.path.realpath(inbox)

    assert resolves_inside(inbox / "real" / "a.dcm", root)
    assert resolves_inside(inbox / "inner" / "a.dcm", root)
    assert not resolves_inside(inbox / "escape" / "a.dcm", root)


def test_a_sibling_folder_sharing_the_prefix_is_not_inside(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox2").mkdir()
    assert not resolves_inside(tmp_path / "inbox2" / "a.dcm", os.path.realpath(tmp_path / "inbox"))
