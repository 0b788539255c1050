"""Pages from templates, with the signed-in user and the form token every page needs."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from cxr_screen.web.access import CSRF_FIELD, Reader
from cxr_screen.web.state import web_state


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    reader: Reader | None,
    csrf: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The template `name` filled with `context` (autoescaped), as an HTML response."""
    template = web_state(request).templates.get_template(name)
    html = template.render(
        **context,
        reader=reader,
        csrf=csrf if csrf is not None else (reader.csrf if reader else ""),
        csrf_field=CSRF_FIELD,
        path=request.url.path,
    )
    return HTMLResponse(html, status_code=status)
