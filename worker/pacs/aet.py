"""DICOM names without network code: AE titles, UIDs safe as file names, `AE@host:port`."""

from __future__ import annotations

import re
from dataclasses import dataclass

# PS3.5 AE VR: up to 16 characters of the default repertoire, no backslash or control
# characters; leading and trailing spaces are not significant.
AE_MAX = 16
_AE_CHARS = re.compile(r"^[\x20-\x5b\x5d-\x7e]+$")
# PS3.5 9.1: components of digits without leading zeros, dot-separated, 64 characters.
# Nothing but digits and dots, so a UID can never climb out of a folder.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_DESTINATION = re.compile(r"^(?P<ae>[^@]+)@(?P<host>\[[0-9a-fA-F:.]+\]|[^:@\[\]]+):(?P<port>\d+)$")


def check_ae_title(value: str) -> str:
    """The AE title, stripped; raises ValueError naming the value and the rule it breaks."""
    title = value.strip()
    if not title:
        raise ValueError("an AE title must not be empty; use up to 16 letters, digits or _")
    if len(title) > AE_MAX:
        raise ValueError(f"AE title {title!r} is {len(title)} characters; the limit is {AE_MAX}")
    if not _AE_CHARS.match(title):
        raise ValueError(
            f"AE title {title!r} has a backslash or a character outside printable ASCII; "
            "use letters, digits, _ or -"
        )
    return title


def is_uid(value: object) -> bool:
    """Whether `value` is a well-formed DICOM UID (and so safe as a file or folder name)."""
    return isinstance(value, str) and len(value) <= 64 and _UID.match(value) is not None


@dataclass(frozen=True, slots=True)
class Destination:
    """A remote DICOM node: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_destination(value: str) -> Destination:
    """Parse `AE@host:port` (IPv6 hosts in brackets); raises ValueError saying the form."""
    match = _DESTINATION.match(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a DICOM destination; write AE_TITLE@host:port, "
            "for example PACS@pacs.hospital.org:104"
        )
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} of {value!r} is not between 1 and 65535")
    return Destination(check_ae_title(match["ae"]), match["host"].strip("[]"), port)
