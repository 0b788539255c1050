"""What every request handler shares: settings, sessions, the cookie key, templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cxr_screen.web.throttle import SignInThrottle
from worker.imaging import DecodeOptions
from worker.settings import Settings

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The account the shared password (CXR_WEB_PASSWORD) signs in as.
SHARED_ACCOUNT = "shared"


@dataclass(frozen=True, slots=True)
class WebState:
    """Built once by `create_app`; found on `request.app.state.web`."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    key: bytes
    decode: DecodeOptions
    templates: jinja2.Environment
    throttle: SignInThrottle = field(default_factory=SignInThrottle)


def web_state(request: Request) -> WebState:
    """The app's shared state."""
    state: WebState = request.app.state.web
    return state


def template_environment() -> jinja2.Environment:
    """Jinja with autoescape on for every template: file names and headers are hostile."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["prob"] = _prob
    return environment


def _when(value: object) -> str:
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:19].replace("T", " ")


def _prob(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ""
