"""Data access for the model registry and training runs (keyword-only, caller commits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ModelStatus, ModelVersion, RunStatus, TrainingRun
from db.types import utcnow


class ModelNotFoundError(LookupError):
    """No model version has the requested name."""


def get_active_model(session: Session) -> ModelVersion | None:
    """The model in service, or None before the first promotion."""
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.ACTIVE)
        .order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())
        .limit(1)
    ).first()


def get_model(session: Session, *, version: str) -> ModelVersion | None:
    """The model version called `version`, or None."""
    return session.scalars(select(ModelVersion).where(ModelVersion.version == version)).first()


def require_model(session: Session, *, version: str) -> ModelVersion:
    """The model version called `version`; `ModelNotFoundError` if there is none."""
    model = get_model(session, version=version)
    if model is None:
        raise ModelNotFoundError(version)
    return model


def list_models(session: Session, *, limit: int | None = None) -> Sequence[ModelVersion]:
    """Model versions, newest first."""
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    if limit:
        query = query.limit(limit)
    return session.scalars(query).all()


def latest_model(session: Session) -> ModelVersion | None:
    """The most recently registered model version of any status."""
    return session.scalars(
        select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    ).first()


def add_candidate(
    session: Session,
    *,
    version: str,
    artifact_path: str,
    checksum: str,
    backbone: str,
    classes: list[str],
    positive_class: str,
    input_size: int,
    threshold: float,
    base_weights_sha256: str | None,
    data_fingerprint: str | None,
    metrics: dict[str, Any],
    notes: str | None = None,
) -> ModelVersion:
    """Register a trained model as a candidate (not yet in service)."""
    model = ModelVersion(
        version=version,
        artifact_path=artifact_path,
        checksum=checksum,
        backbone=backbone,
        classes=list(classes),
        positive_class=positive_class,
        input_size=input_size,
        threshold=threshold,
        base_weights_sha256=base_weights_sha256,
        data_fingerprint=data_fingerprint,
        metrics=dict(metrics),
        status=ModelStatus.CANDIDATE,
        notes=notes,
    )
    session.add(model)
    session.flush()
    return model


def set_active(session: Session, *, version: str, notes: str | None = None) -> ModelVersion:
    """Put `version` in service and retire the model it replaces, in one transaction.

    The current active row is read ``FOR UPDATE`` (on PostgreSQL) so two promotions at
    once cannot leave two active models.
    """
    now = utcnow()
    target = require_model(session, version=version)
    current = session.scalars(
        select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE).with_for_update()
    ).all()
    for model in current:
        if model.id != target.id:
            model.status = ModelStatus.RETIRED
            model.retired_at = now
    # Retire first: a partial unique index on the active status must never see two rows.
    session.flush()
    target.status = ModelStatus.ACTIVE
    target.promoted_at = now
    target.retired_at = None
    if notes:
        target.notes = _append(target.notes, notes)
    session.flush()
    return target


def reject(session: Session, *, version: str, reason: str) -> ModelVersion:
    """Mark `version` rejected (failed the gate, or rolled back), keeping the reason."""
    model = require_model(session, version=version)
    model.status = ModelStatus.REJECTED
    if model.promoted_at is not None:
        model.retired_at = utcnow()
    model.notes = _append(model.notes, reason)
    session.flush()
    return model


def previous_active(session: Session) -> ModelVersion | None:
    """The model that was in service before the current one: the last retired one.

    Rolled-back models are marked rejected rather than retired, so rolling back twice
    walks further back instead of toggling between two versions.
    """
    return session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.status == ModelStatus.RETIRED,
            ModelVersion.promoted_at.is_not(None),
        )
        .order_by(ModelVersion.retired_at.desc(), ModelVersion.id.desc())
        .limit(1)
    ).first()


def start_run(
    session: Session, *, trigger: str, data_fingerprint: str | None = None
) -> TrainingRun:
    """Record a training run that has started."""
    run = TrainingRun(
        trigger=trigger,
        status=RunStatus.RUNNING,
        started_at=utcnow(),
        data_fingerprint=data_fingerprint,
        metrics={},
        log="",
    )
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session,
    *,
    run_id: int,
    status: RunStatus,
    log: str,
    metrics: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
    model_version_id: int | None = None,
    error: str | None = None,
) -> TrainingRun:
    """Record how a run ended, with its duration, metrics and log."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"training run {run_id} does not exist")
    now = utcnow()
    run.status = status
    run.finished_at = now
    run.duration_s = (now - run.started_at).total_seconds()
    run.log = log
    run.metrics = dict(metrics or {})
    if data_fingerprint is not None:
        run.data_fingerprint = data_fingerprint
    run.model_version_id = model_version_id
    run.error = error
    session.flush()
    return run


def list_runs(session: Session, *, limit: int | None = 20) -> Sequence[TrainingRun]:
    """Training runs, newest first."""
    query = select(TrainingRun).order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
    if limit:
        query = query.limit(limit)
    return session.scalars(query).all()


def add_note(session: Session, *, version: str, note: str) -> ModelVersion:
    """Append a line to a version's notes (who changed its status, and how)."""
    model = require_model(session, version=version)
    model.notes = _append(model.notes, note)
    session.flush()
    return model


def _append(notes: str | None, line: str) -> str:
    return f"{notes}\n{line}" if notes else line
