"""PACS integration: a DICOM C-STORE receiver, and AI results sent back as Structured Reports."""

from __future__ import annotations

import logging


def quiet_pynetdicom(level: str) -> None:
    """Keep pynetdicom's warnings and errors, not its line per association and message.

    At DEBUG our own level, its INFO lines (associations, statuses) are kept too; its
    DEBUG output (PDU dumps) never is.
    """
    logging.getLogger("pynetdicom").setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
