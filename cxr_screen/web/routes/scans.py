"""A scan's page (pictures, verdict, header facts, whereabouts, report), and its reviews."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from cxr_screen.web.access import Db, SignedIn
from cxr_screen.web.images import heatmap_png, model_input_png, whereabouts
from cxr_screen.web.render import render
from cxr_screen.web.state import web_state
from db.model_registry import get_active_model
from db.models import ModelVersion, Prediction, Scan, ScanStatus
from db.results import get_result
from db.reviews import UNUSABLE, add_review, latest_prediction, reviews_of

log = logging.getLogger(__name__)
router = APIRouter()
DEFAULT_INPUT_SIZE = 224
PNG_HEADERS = {"Cache-Control": "private, no-store"}


def _not_found(request: Request, reader: SignedIn) -> Response:
    context = {"title": "No such scan", "message": "There is no scan with this number."}
    return render(request, "refused.html", context, reader=reader, status=404)


@router.get("/scans/{scan_id}", response_class=HTMLResponse)
def scan_page(request: Request, scan_id: int, db: Db, reader: SignedIn) -> Response:
    """Everything known about one scan, and the review form when it has a verdict."""
    row = get_result(db, scan_id=scan_id)
    scan = db.get(Scan, scan_id)
    if row is None or scan is None:
        return _not_found(request, reader)
    prediction = latest_prediction(db, scan_id=scan_id)
    model = prediction.model_version if prediction is not None else None
    reason, remedy = reason_and_remedy(row.error)
    context = {
        "row": row,
        "scan": scan,
        "prediction": prediction,
        "review_labels": [*model.classes, UNUSABLE] if model is not None else [],
        "unusable": UNUSABLE,
        "reviews": reviews_of(db, scan_id=scan_id),
        "where": whereabouts(web_state(request).settings, row.stored_path, row.source_path),
        "reason": reason,
        "remedy": remedy,
        "reviewed": request.query_params.get("reviewed") == "1",
    }
    return render(request, "scan.html", context, reader=reader)


@router.get("/scans/{scan_id}/heatmap.png")
def heatmap(request: Request, scan_id: int, db: Db, reader: SignedIn) -> Response:
    """The scan's heatmap overlay, read from the archive."""
    row = get_result(db, scan_id=scan_id)
    data = None
    if row is not None:
        data = heatmap_png(
            web_state(request).settings, scan_id=scan_id, heatmap_path=row.heatmap_path
        )
    if data is None:
        return Response("no heatmap\n", status_code=404, media_type="text/plain")
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


@router.get("/scans/{scan_id}/input.png")
def model_input(request: Request, scan_id: int, db: Db, reader: SignedIn) -> Response:
    """The archived file as the model saw it (decoded at the verdict's model input size)."""
    row = get_result(db, scan_id=scan_id)
    data = None
    if row is not None and row.status == ScanStatus.DONE.value:
        state = web_state(request)
        data = model_input_png(
            state.settings,
            state.decode,
            scan_id=scan_id,
            sha256=row.sha256,
            stored_path=row.stored_path,
            input_size=_input_size(db, scan_id),
        )
    if data is None:
        return Response("no model input\n", status_code=404, media_type="text/plain")
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


@router.post("/scans/{scan_id}/review")
def review(
    request: Request,
    scan_id: int,
    db: Db,
    reader: SignedIn,
    label: Annotated[str, Form(max_length=64)],
    prediction_id: Annotated[int, Form()],
) -> Response:
    """Record the reader's label of the verdict they saw (`prediction_id`)."""
    seen = db.get(Prediction, prediction_id)
    if seen is None or seen.scan_id != scan_id:
        context = {
            "title": "Not recorded",
            "message": "This scan has no verdict to review (or the form was not its own).",
        }
        return render(request, "refused.html", context, reader=reader, status=409)
    if label not in (*seen.model_version.classes, UNUSABLE):
        context = {
            "title": "Not recorded",
            "message": f"Choose one of {', '.join([*seen.model_version.classes, UNUSABLE])}.",
        }
        return render(request, "refused.html", context, reader=reader, status=422)
    add_review(db, scan_id=scan_id, label=label, reviewer_id=reader.id, prediction=seen)
    log.info("scan %d reviewed by %s", scan_id, reader.name)
    return RedirectResponse(f"/scans/{scan_id}?reviewed=1", status_code=303)


def _input_size(db: Session, scan_id: int) -> int:
    """The input side of the model that made the verdict (else the active model's)."""
    prediction = latest_prediction(db, scan_id=scan_id)
    model: ModelVersion | None = (
        prediction.model_version if prediction is not None else get_active_model(db)
    )
    return model.input_size if model is not None else DEFAULT_INPUT_SIZE


def reason_and_remedy(error: str | None) -> tuple[str | None, str | None]:
    """A scan's error message split into what is wrong and what to do.

    Messages read `<file>: <problem>; <remedy>` (`worker.imaging.errors.FileError`); one
    without a `; ` is all reason.
    """
    if not error:
        return None, None
    reason, separator, remedy = error.partition("; ")
    return (reason, remedy) if separator else (error, None)
