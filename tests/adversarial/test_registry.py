"""Item 16: the database itself refuses a second active model (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.model_registry import get_active_model, set_active
from db.models import ModelStatus, ModelVersion
from db.session import session_scope

ROOT = Path(__file__).resolve().parents[2]


def _model(version: str, status: ModelStatus) -> ModelVersion:
    return ModelVersion(
        version=version,
        artifact_path=f"/models/{version}/model.keras",
        checksum="0" * 64,
        backbone="tiny",
        classes=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        input_size=32,
        threshold=0.5,
        metrics={},
        status=status,
    )


def test_item16_a_second_active_model_is_refused_by_the_database(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        session.add_all([_model("a", ModelStatus.ACTIVE), _model("b", ModelStatus.CANDIDATE)])
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.version == "b")
            .values(status=ModelStatus.ACTIVE)
        )
    with session_scope(session_factory) as session:
        set_active(session, version="b")  # the promotion path retires first: no conflict
    with session_factory() as session:
        active = get_active_model(session)
        assert active is not None
        assert active.version == "b"


def test_item16_every_volume_mount_point_is_made_for_the_service_user() -> None:
    """Docker creates a missing mount point as root; the image must own each one."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    targets = {
        volume.split(":")[1]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and volume.split(":")[1].startswith("/srv/cxr")
    }
    assert targets, "compose mounts volumes under /srv/cxr"
    made = set(re.findall(r"(/srv/cxr/[\w/-]+)", dockerfile))
    assert targets <= made, f"not created in the image: {targets - made}"
    assert re.search(r"chown -R cxr[^\n]*/srv/cxr", dockerfile)
    assert dockerfile.index("chown") < dockerfile.index("USER cxr")
