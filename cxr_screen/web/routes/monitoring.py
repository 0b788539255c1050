"""/metrics (Prometheus) and /healthz: no sign-in, no patient data, counts and states only."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cxr_screen.web.health import check_broker, check_database, check_model
from cxr_screen.web.metrics import exposition, registry_for
from cxr_screen.web.state import web_state

router = APIRouter()


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """The service's figures, read from the database now."""
    state = web_state(request)
    body = exposition(registry_for(state.factory))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
def healthz(request: Request) -> Response:
    """200 when the database, the broker and an active model are all there; else 503."""
    state = web_state(request)
    checks = [
        check_database(state.engine),
        check_broker(state.settings.storage.broker_url),
        check_model(state.factory),
    ]
    healthy = all(check.ok for check in checks)
    body = {
        "status": "ok" if healthy else "failing",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return JSONResponse(body, status_code=200 if healthy else 503)
