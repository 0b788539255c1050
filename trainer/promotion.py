"""Changes to which model is active: promotion through the gate, and rollback."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.models import ModelStatus
from db.session import session_scope
from trainer.data import LabelledSplit
from trainer.errors import NoActiveModelError, RegistryError
from trainer.gate import GateDecision, GateFolder, GateRule, gate_registered
from trainer.registered import active_ref, find_ref
from worker.imaging import DecodeOptions

logger = logging.getLogger(__name__)


def promote(
    factory: sessionmaker[Session],
    *,
    version: str,
    split: LabelledSplit | None,
    cache_root: Path,
    decode: DecodeOptions,
    force: bool = False,
    rule: GateRule | None = None,
) -> GateDecision | None:
    """Make `version` active if it passes the gate on `split` (or unconditionally with
    `force`). Returns the gate's decision (None when forced); raises when it fails."""
    target = find_ref(factory, version)
    if target.status is ModelStatus.ACTIVE:
        raise RegistryError(f"{version} is already the active model")
    decision: GateDecision | None = None
    if not force:
        if split is None:
            raise RegistryError(
                "the gate needs the evaluation folder: set CXR_DATA_DIR (its val/ or test/ "
                "is used) or pass --force to skip the gate"
            )
        folder = GateFolder(split, cache_root, decode)
        decision = gate_registered(target, active_ref(factory), folder, rule=rule)
        if not decision.passed:
            raise RegistryError(
                f"{version} was not promoted ({decision.summary()}); pass --force to promote "
                "it anyway"
            )
    with session_scope(factory) as session:
        note = "promoted by hand" + (" (gate skipped with --force)" if force else "")
        model_registry.set_active(session, version=version, notes=note)
    logger.info("%s is now the active model", version)
    return decision


def rollback(factory: sessionmaker[Session]) -> tuple[str, str]:
    """Reactivate the previously active model; the current one is marked rejected.

    Returns:
        (the version rolled back, the version now active).
    """
    with session_scope(factory) as session:
        current = model_registry.get_active_model(session)
        if current is None:
            raise NoActiveModelError("there is no active model to roll back")
        previous = model_registry.previous_active(session)
        if previous is None:
            raise RegistryError(
                f"{current.version} is the only model that was ever active; nothing to roll back to"
            )
        old, new = current.version, previous.version
        model_registry.reject(session, version=old, reason=f"rolled back to {new}")
        model_registry.set_active(session, version=new, notes=f"reactivated by rollback of {old}")
    logger.info("rolled back %s; %s is active again", old, new)
    return old, new
