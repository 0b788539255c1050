"""Typed SQLAlchemy 2.0 models: scans, predictions, model versions, training runs."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.types import UTCDateTime, utcnow

# Integer primary keys that autoincrement on SQLite (which only does so for INTEGER)
# and are 64-bit on PostgreSQL, where a busy site can pass 2**31 predictions.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Deterministic constraint names keep Alembic migrations identical on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the project's naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class ScanStatus(enum.StrEnum):
    """Where a scan is in its life.

    `rejected` is a valid file that is out of scope (a CT, a hip, too large);
    `failed` is a file that is broken or could not be screened after retries.
    """

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"


class ModelStatus(enum.StrEnum):
    """A model version's place in the registry; exactly one is `active` at a time."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"
    REJECTED = "rejected"


class RunStatus(enum.StrEnum):
    """Outcome of one training run."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"


class HeatmapStatus(enum.StrEnum):
    """Whether a screened scan's Grad-CAM heatmap was made (CXR_HEATMAPS selects which).

    NULL on the scan row: none was asked for. `pending`: asked for with the verdict, not
    made yet (a report waits for it); `failed`: could not be made, the verdict stands.
    """

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class ReportStatus(enum.StrEnum):
    """Whether a DICOM scan's result went back to the PACS as a Structured Report.

    NULL on the scan row: not a DICOM scan, or not screened yet. `disabled`: finished
    while reports were turned off (never sent later, so turning them on does not flood
    the PACS with old results).
    """

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    DISABLED = "disabled"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint: readable in SQL, portable, and a
    # new value is a small migration instead of ALTER TYPE.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Scan(Base):
    """One received file, identified by the SHA-256 of its content."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source_path: Mapped[str] = mapped_column(Text)
    stored_path: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    view_position: Mapped[str | None] = mapped_column(String(16))
    patient_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[ScanStatus] = mapped_column(
        _enum(ScanStatus, "scan_status"), default=ScanStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Delivery of the result to the PACS as a DICOM Structured Report (DICOM scans only).
    report_status: Mapped[ReportStatus | None] = mapped_column(_enum(ReportStatus, "report_status"))
    report_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    report_next_attempt_at: Mapped[datetime | None]
    report_sent_at: Mapped[datetime | None]
    report_error: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    report_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    # The Grad-CAM heatmap of the verdict: a PNG beside the archived file and, for DICOM
    # scans, a Secondary Capture sent with the report (its UID once built).
    heatmap_status: Mapped[HeatmapStatus | None] = mapped_column(
        _enum(HeatmapStatus, "heatmap_status")
    )
    heatmap_path: Mapped[str | None] = mapped_column(Text)
    heatmap_error: Mapped[str | None] = mapped_column(Text)
    heatmap_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))

    predictions: Mapped[list[Prediction]] = relationship(back_populates="scan")

    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        # The results command lists newest first, filtered by status.
        Index("ix_scans_status_received_at", "status", "received_at"),
        Index("ix_scans_received_at", "received_at"),
        # The report sender looks for done DICOM scans not yet considered (NULL) and for
        # pending reports; both are a seek on this index, however many JPEGs there are.
        Index("ix_scans_report_status_format_status", "report_status", "format", "status"),
    )


class ModelVersion(Base):
    """A trained model artifact and what is known about it."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    artifact_path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    backbone: Mapped[str] = mapped_column(String(32))
    classes: Mapped[list[str]] = mapped_column(JSON)
    positive_class: Mapped[str] = mapped_column(String(64))
    input_size: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)
    base_weights_sha256: Mapped[str | None] = mapped_column(String(64))
    data_fingerprint: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[ModelStatus] = mapped_column(
        _enum(ModelStatus, "model_status"), default=ModelStatus.CANDIDATE, index=True
    )
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("threshold >= 0 AND threshold <= 1", name="threshold_is_probability"),
        # At most one model in service, enforced by the database (revision 0005).
        Index(
            "uq_model_versions_one_active",
            "status",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )


class Prediction(Base):
    """One model version's verdict on one scan; never two for the same pair."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    label: Mapped[str] = mapped_column(String(64), index=True)
    probability: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    threshold: Mapped[float] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    # What the forward pass computed in (`float32`, `mixed_bfloat16`, ...; CXR_PRECISION):
    # 16-bit answers differ from float32 in the third decimal, so an audit must be able
    # to tell them apart. NULL on rows written before revision 0004.
    inference_precision: Mapped[str | None] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    scan: Mapped[Scan] = relationship(back_populates="predictions")
    model_version: Mapped[ModelVersion] = relationship()

    __table_args__ = (
        UniqueConstraint("scan_id", "model_version_id", name="uq_predictions_scan_model"),
        CheckConstraint("probability >= 0 AND probability <= 1", name="probability_range"),
        Index("ix_predictions_scan_id_created_at", "scan_id", "created_at"),
    )


class TrainingRun(Base):
    """One attempt to train a model, nightly or by hand."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.RUNNING, index=True
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    data_fingerprint: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)


class Lock(Base):
    """A named lease held by one process across hosts (for example the nightly training).

    A row per held lock; an expired lease may be taken over, so a crashed holder
    cannot block the lock forever.
    """

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Duplicate(Base):
    """A file that arrived again with content already recorded: kept, not re-screened."""

    __tablename__ = "duplicates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    source_path: Mapped[str] = mapped_column(Text)
    stored_path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserRole(enum.StrEnum):
    """What a person signed in to the web pages may do.

    `reader`: look at results and review scans; `admin`: also promote and roll back models.
    """

    READER = "reader"
    ADMIN = "admin"


class User(Base):
    """A person who signs in to the web pages (`cxr-screen users add`)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[UserRole] = mapped_column(_enum(UserRole, "user_role"))
    # `scrypt$n$r$p$<salt hex>$<hash hex>`; NULL for the shared account of the minimal
    # mode (CXR_WEB_PASSWORD), which has no password of its own.
    password_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Review(Base):
    """A reader's label of a screened scan; never updated: a newer row supersedes it.

    The latest row per scan (by `reviewed_at`, then `id`) is the scan's reviewed label;
    it names the verdict it reviewed (prediction, model version, probability).
    """

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    # A class of the model that made the verdict (NORMAL, PNEUMONIA) or `UNUSABLE`.
    label: Mapped[str] = mapped_column(String(64))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    reviewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    probability: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # The latest review of a scan is a seek on this index.
        Index("ix_reviews_scan_id_reviewed_at", "scan_id", "reviewed_at"),
        CheckConstraint(
            "probability IS NULL OR (probability >= 0 AND probability <= 1)",
            name="probability_range",
        ),
    )
