"""The model registry and training runs; promote and roll back (admins, through the gate)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from cxr_screen.model_changes import promote_through_gate, roll_back
from cxr_screen.web.access import Admin, Db, SignedIn
from cxr_screen.web.images import PNG_SIGNATURE
from cxr_screen.web.render import render
from cxr_screen.web.state import web_state
from db import model_registry
from db.models import ModelVersion, TrainingRun
from db.session import session_scope
from trainer.errors import TrainerError
from worker.confined import HeldFile, inside, read_held

log = logging.getLogger(__name__)
router = APIRouter()
REPORT_NAME = "report.png"
MAX_REPORT_BYTES = 32 * 1024**2
RUNS_SHOWN = 50


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, db: Db, reader: SignedIn) -> Response:
    """Every version with its figures and gate decision, and the latest training runs."""
    settings = web_state(request).settings
    models = model_registry.list_models(db)
    context = {
        "models": models,
        "gates": {m.id: m.metrics.get("gate") or {} for m in models},
        "reports": {m.id: _has_report(settings.storage.model_dir, m) for m in models},
        "runs": model_registry.list_runs(db, limit=RUNS_SHOWN),
        "message": request.query_params.get("done"),
    }
    return render(request, "models.html", context, reader=reader)


@router.get("/models/{model_id}/report.png")
def report_png(request: Request, model_id: int, db: Db, reader: SignedIn) -> Response:
    """A version's evaluation report (ROC curve, confusion matrix), from its folder."""
    model = db.get(ModelVersion, model_id)
    root = web_state(request).settings.storage.model_dir.resolve()
    path = _report_path(root, model) if model is not None else None
    if path is not None:
        try:
            held = read_held(root, path, max_bytes=MAX_REPORT_BYTES)
        except OSError:
            held = None
        if isinstance(held, HeldFile) and held.data.startswith(PNG_SIGNATURE):
            return Response(held.data, media_type="image/png")
    return Response("no report\n", status_code=404, media_type="text/plain")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: int, db: Db, reader: SignedIn) -> Response:
    """One training run with its log."""
    run = db.get(TrainingRun, run_id)
    if run is None:
        context = {"title": "No such run", "message": "There is no training run with this number."}
        return render(request, "refused.html", context, reader=reader, status=404)
    return render(request, "run.html", {"run": run}, reader=reader)


@router.post("/models/promote")
def promote(
    request: Request, version: Annotated[str, Form(max_length=64)], reader: Admin
) -> Response:
    """Put `version` in service if the gate passes it, as `cxr-screen models promote` does."""
    state = web_state(request)
    try:
        decision = promote_through_gate(state.settings, state.factory, version=version)
    except (TrainerError, SQLAlchemyError) as exc:
        log.warning("promotion of %s by %s refused: %s", version, reader.name, exc)
        return _refused(request, reader, f"{version} was not promoted: {exc}")
    reasons = "; ".join(decision.reasons) if decision is not None else ""
    with session_scope(state.factory) as session:
        model_registry.add_note(
            session, version=version, note=f"promoted by {reader.name} on the web pages"
        )
    log.info("%s promoted by %s on the web pages", version, reader.name)
    return _done(f"{version} is now the active model. {reasons}")


@router.post("/models/rollback")
def rollback(request: Request, reader: Admin) -> Response:
    """Reactivate the previously active model, as `cxr-screen models rollback` does."""
    state = web_state(request)
    try:
        old, new = roll_back(state.factory)
    except (TrainerError, SQLAlchemyError) as exc:
        log.warning("rollback by %s refused: %s", reader.name, exc)
        return _refused(request, reader, f"Nothing was rolled back: {exc}")
    with session_scope(state.factory) as session:
        note = f"rolled back by {reader.name} on the web pages"
        model_registry.add_note(session, version=old, note=note)
        model_registry.add_note(session, version=new, note=note)
    log.info("rolled back %s to %s by %s on the web pages", old, new, reader.name)
    return _done(f"Rolled back {old}; {new} is active again.")


def _report_path(root: Path, model: ModelVersion) -> Path | None:
    """The report beside the version's artifact, if that is inside the model folder."""
    path = Path(model.artifact_path).parent / REPORT_NAME
    resolved = root.resolve()
    return path if path.is_absolute() and inside(resolved, path) else None


def _has_report(root: Path, model: ModelVersion) -> bool:
    path = _report_path(root, model)
    return path is not None and path.is_file()


def _done(message: str) -> Response:
    return RedirectResponse(f"/models?{urlencode({'done': message[:500]})}", status_code=303)


def _refused(request: Request, reader: Admin, message: str) -> Response:
    context = {"title": "Not changed", "message": message}
    return render(request, "refused.html", context, reader=reader, status=409)
