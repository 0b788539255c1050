"""AE titles, UIDs as file names, and `AE@host:port` destinations."""

from __future__ import annotations

import pytest

from worker.pacs.aet import Destination, check_ae_title, is_uid, parse_destination


def test_an_ae_title_is_stripped_and_kept() -> None:
    assert check_ae_title("  PACS_1 ") == "PACS_1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", r"must not be empty"),
        ("   ", r"must not be empty"),
        ("A" * 17, r"'AAAAAAAAAAAAAAAAA' is 17 characters; the limit is 16"),
        ("BAD\\AE", r"backslash"),
        ("TAB\tAE", r"printable ASCII"),
        ("ÉCRAN", r"printable ASCII"),
    ],
)
def test_a_bad_ae_title_is_refused_with_the_rule(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_ae_title(value)


@pytest.mark.parametrize(
    "value", ["1.2.840.10008.5.1.4.1.1.1", "2.25.614123951001967657244993943244360794", "0.1"]
)
def test_well_formed_uids_are_uids(value: str) -> None:
    assert is_uid(value)


@pytest.mark.parametrize(
    "value",
    ["", "1", "..", "../../etc", "1.2/3", "1.02.3", "1..2", "1.2.", "1.2" + ".3" * 40, None, 12],
)
def test_anything_that_could_leave_a_folder_is_not_a_uid(value: object) -> None:
    assert not is_uid(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PACS@pacs.hospital.org:104", Destination("PACS", "pacs.hospital.org", 104)),
        ("ORTHANC@127.0.0.1:4242", Destination("ORTHANC", "127.0.0.1", 4242)),
        ("PACS@[::1]:11112", Destination("PACS", "::1", 11112)),
    ],
)
def test_destinations_parse_and_print_back(value: str, expected: Destination) -> None:
    parsed = parse_destination(value)
    assert parsed == expected
    assert str(parsed) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("pacs.hospital.org:104", r"write AE_TITLE@host:port"),
        ("PACS@pacs.hospital.org", r"write AE_TITLE@host:port"),
        ("PACS@host:0", r"port 0 .* is not between 1 and 65535"),
        ("PACS@host:70000", r"port 70000 .* is not between 1 and 65535"),
        ("WAY_TOO_LONG_AE_TITLE@host:104", r"the limit is 16"),
    ],
)
def test_a_bad_destination_says_the_form(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_destination(value)
