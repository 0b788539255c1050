"""Keyword-only data access for reviews: readers' labels of screened scans (caller commits).

Rows are only ever added: a newer review of a scan supersedes the older ones, which stay
as the record of who said what, when, about which verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, Select, and_, func, select
from sqlalchemy.orm import Session, aliased

from db.models import ModelVersion, Prediction, Review, Scan, User

# The label a reader gives a scan that cannot be read (wrong film, cut off, blank).
UNUSABLE = "UNUSABLE"
# A review with its scan, reviewer, and the verdict it reviewed (outer joined: may be None).
_Found = Select[Review, Scan, User, ModelVersion, Prediction]


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """A review with the names a page or a trainer needs."""

    review_id: int
    scan_id: int
    sha256: str
    label: str
    reviewer_id: int
    reviewer: str
    reviewed_at: datetime
    model_version: str | None
    probability: float | None
    predicted_label: str | None


def add_review(
    session: Session,
    *,
    scan_id: int,
    label: str,
    reviewer_id: int,
    prediction: Prediction | None,
) -> Review:
    """Record a reader's label of a scan and the verdict (`prediction`) they reviewed."""
    review = Review(
        scan_id=scan_id,
        label=label,
        reviewer_id=reviewer_id,
        prediction_id=prediction.id if prediction is not None else None,
        model_version_id=prediction.model_version_id if prediction is not None else None,
        probability=prediction.probability if prediction is not None else None,
    )
    session.add(review)
    session.flush()
    return review


def _rows() -> _Found:
    return (
        select(Review, Scan, User, ModelVersion, Prediction)
        .join(Scan, Scan.id == Review.scan_id)
        .join(User, User.id == Review.reviewer_id)
        .outerjoin(ModelVersion, ModelVersion.id == Review.model_version_id)
        .outerjoin(Prediction, Prediction.id == Review.prediction_id)
    )


def _latest_only() -> _Found:
    newer = aliased(Review)
    superseded = (
        select(newer.id)
        .where(
            newer.scan_id == Review.scan_id,
            (newer.reviewed_at > Review.reviewed_at)
            | and_(newer.reviewed_at == Review.reviewed_at, newer.id > Review.id),
        )
        .exists()
    )
    return _rows().where(~superseded)


def _row(found: Row[Review, Scan, User, ModelVersion, Prediction]) -> ReviewRow:
    review: Review = found[0]
    scan: Scan = found[1]
    user: User = found[2]
    model: ModelVersion | None = found[3]
    prediction: Prediction | None = found[4]
    return ReviewRow(
        review_id=review.id,
        scan_id=scan.id,
        sha256=scan.sha256,
        label=review.label,
        reviewer_id=user.id,
        reviewer=user.name,
        reviewed_at=review.reviewed_at,
        model_version=model.version if model is not None else None,
        probability=review.probability,
        predicted_label=prediction.label if prediction is not None else None,
    )


def reviews_of(session: Session, *, scan_id: int) -> list[ReviewRow]:
    """Every review of a scan, newest (the one in force) first."""
    query = (
        _rows()
        .where(Review.scan_id == scan_id)
        .order_by(Review.reviewed_at.desc(), Review.id.desc())
    )
    return [_row(found) for found in session.execute(query)]


def latest_reviews(
    session: Session, *, scan_ids: Sequence[int] | None = None, since: datetime | None = None
) -> list[ReviewRow]:
    """The review in force of each reviewed scan (the newest), optionally of `scan_ids`
    only or reviewed at or after `since`; by scan id."""
    query = _latest_only().order_by(Review.scan_id)
    if scan_ids is not None:
        query = query.where(Review.scan_id.in_(list(scan_ids)))
    if since is not None:
        query = query.where(Review.reviewed_at >= since)
    return [_row(found) for found in session.execute(query)]


@dataclass(frozen=True, slots=True)
class ReviewCounts:
    """How the reviews in force compare with the verdicts they reviewed."""

    reviewed: int
    confirmed: int
    corrected: int
    unusable: int


def review_counts(session: Session) -> ReviewCounts:
    """Counts over the review in force of each scan."""
    latest = _latest_only().with_only_columns(Review.label, Prediction.label).subquery()
    reviewed_label, predicted_label = latest.c[0], latest.c[1]
    rows = session.execute(
        select(reviewed_label, predicted_label, func.count()).group_by(
            reviewed_label, predicted_label
        )
    ).all()
    confirmed = corrected = unusable = 0
    for reviewed, predicted, count in rows:
        if reviewed == UNUSABLE:
            unusable += count
        elif reviewed == predicted:
            confirmed += count
        else:
            corrected += count
    return ReviewCounts(confirmed + corrected + unusable, confirmed, corrected, unusable)


def latest_prediction(session: Session, *, scan_id: int) -> Prediction | None:
    """The verdict a reader sees on a scan's page (the newest), with its model version."""
    return session.scalars(
        select(Prediction)
        .where(Prediction.scan_id == scan_id)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
        .limit(1)
    ).first()
