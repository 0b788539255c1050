"""Promotion through the gate and rollback, the one path for the CLI and the web pages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from worker.settings import Settings

if TYPE_CHECKING:
    from trainer.gate import GateDecision


def promote_through_gate(
    settings: Settings, factory: sessionmaker[Session], *, version: str, force: bool = False
) -> GateDecision | None:
    """Make `version` active if the gate passes it on CXR_DATA_DIR's evaluation split.

    Returns the gate's decision (None with `force`, which skips the gate).

    Raises:
        TrainerError: the version is unknown or already active, the gate has no data, or
            the gate refused it (the message gives its reasons).
    """
    # Imported here: TensorFlow takes seconds to load, and only a promotion needs it.
    from trainer.data import load_dataset
    from trainer.nightly import cache_root
    from trainer.promotion import promote
    from worker.decode_config import decode_options

    split = None
    if not force and settings.training.data_dir is not None:
        split = load_dataset(settings.training.data_dir).evaluation
    return promote(
        factory,
        version=version,
        split=split,
        cache_root=cache_root(settings),
        decode=decode_options(settings),
        force=force,
    )


def roll_back(factory: sessionmaker[Session]) -> tuple[str, str]:
    """Reactivate the previously active model; returns (rolled back, now active)."""
    from trainer.promotion import rollback  # loads TensorFlow: import late

    return rollback(factory)
