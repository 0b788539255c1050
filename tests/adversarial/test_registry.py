"""Item 16: one active model, enforced by the database; image folders owned by the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.model_registry import get_active_model, set_active
from db.models import ModelStatus, ModelVersion
from db.session import session_scope
from trainer.promotion import rollback

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


def test_item16_a_second_active_row_cannot_be_inserted(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        session.add(_model("a", ModelStatus.ACTIVE))
    with pytest.raises(IntegrityError), session_scope(session_factory) as session:
        session.add(_model("b", ModelStatus.ACTIVE))
    with session_factory() as session:
        versions = session.scalars(select(ModelVersion.version)).all()
    assert versions == ["a"]


def test_item16_promotion_and_rollback_keep_working_under_the_index(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        session.add_all([_model(v, ModelStatus.CANDIDATE) for v in ("a", "b", "c")])
    for version in ("a", "b", "c"):
        with session_scope(session_factory) as session:
            set_active(session, version=version)
    assert rollback(session_factory) == ("c", "b")
    assert rollback(session_factory) == ("b", "a")
    with session_factory() as session:
        status = dict(session.execute(select(ModelVersion.version, ModelVersion.status)).all())
    assert status == {"a": "active", "b": "rejected", "c": "rejected"}


def _named_volume_targets(service: dict[str, Any], named: set[str]) -> set[str]:
    """Where `service` mounts a named volume (bind mounts come from the host: not ours)."""
    targets = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):  # the long syntax
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source in named:
            targets.add(target)
    return targets


def _commands_before_user(dockerfile: str) -> list[list[str]]:
    """Each shell command of the RUN lines before `USER`, as words (continuations joined)."""
    text = dockerfile.replace("\\\n", " ")
    before_user = text[: text.index("\nUSER ")]
    commands = []
    for line in before_user.splitlines():
        if line.startswith("RUN "):
            commands += [part.split() for part in line.removeprefix("RUN ").split("&&")]
    return commands


def _covered(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def test_item16_every_volume_mount_point_is_made_for_the_service_user() -> None:
    """Docker creates a missing mount point as root: each image must own every one.

    A named volume copies the image folder (owner included) on first use, so a mount
    point made and chowned in the image before `USER` is writable by UID 10001.
    """
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    named = set(compose.get("volumes") or {})
    checked = 0
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            continue  # a stock image (Redis, PostgreSQL, Flower): its own folders
        dockerfile = (ROOT / build.get("context", ".") / build["dockerfile"]).read_text()
        commands = _commands_before_user(dockerfile)
        made = {w for c in commands if c[:2] == ["mkdir", "-p"] for w in c[2:]}
        owned = {w for c in commands if c[:3] == ["chown", "-R", "cxr"] for w in c[3:]}
        for target in _named_volume_targets(service, named):
            checked += 1
            assert target in made, f"{name}: {target} is not made in {build['dockerfile']}"
            assert _covered(target, owned), f"{name}: {target} not chowned to cxr"
    assert checked, "compose mounts named volumes on the services it builds"
