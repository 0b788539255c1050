"""A database and folders for the web pages' tests: users, models, scans, real files."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from cxr_screen.web.passwords import hash_password
from db.model_registry import finish_run, start_run
from db.models import (
    HeatmapStatus,
    ModelStatus,
    ReportStatus,
    RunStatus,
    ScanStatus,
    TrainingRun,
    UserRole,
)
from db.session import session_scope
from db.types import utcnow
from db.users import add_user
from tests.factories import add_model_version, add_prediction, add_scan
from worker.filing import archive_path, heatmap_path
from worker.pipeline.heatmap_picture import caption, png_bytes, render

READER = ("rita", "reader password 1")
ADMIN = ("adam", "admin password 12")
HOSTILE_NAME = '<img src=x onerror="alert(1)"><script>alert("x")</script>.jpeg'
INPUT_SIZE = 224


@dataclass(frozen=True, slots=True)
class Seeded:
    """The ids of the rows the pages are tested on."""

    flagged: int  # done, PNEUMONIA, with an archived file and a heatmap
    normal: int  # done, NORMAL, file name with markup in it
    rejected: int
    queued: int
    heatmap_bytes: bytes
    active_version: str
    old_version: str


def radiograph_jpeg(shared: Path | None = None) -> bytes:
    """A real chest X-ray from the shared data when there is one, else a drawn one."""
    if shared is not None:
        folder = shared / "data" / "chest_xray" / "val" / "PNEUMONIA"
        if folder.is_dir():
            first = sorted(folder.glob("*.jpeg"))
            if first:
                return first[0].read_bytes()
    y, x = np.mgrid[0:256, 0:256]
    pixels = (128 + 100 * np.sin(x / 20.0) * np.cos(y / 30.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def seed(factory: sessionmaker[Session], *, folders: Path, shared: Path | None = None) -> Seeded:
    """Users, two model versions, a run, and scans in every state, with their files."""
    archive, quarantine = folders / "archive", folders / "quarantine"
    jpeg = radiograph_jpeg(shared)
    sha = hashlib.sha256(jpeg).hexdigest()
    with session_scope(factory) as session:
        add_user(
            session, name=READER[0], role=UserRole.READER, password_hash=hash_password(READER[1])
        )
        add_user(session, name=ADMIN[0], role=UserRole.ADMIN, password_hash=hash_password(ADMIN[1]))
        old = add_model_version(
            session,
            version="v-2026-11-01",
            status=ModelStatus.RETIRED,
            promoted_at=utcnow() - timedelta(days=30),
            retired_at=utcnow() - timedelta(days=1),
            input_size=INPUT_SIZE,
        )
        active = add_model_version(
            session,
            version="v-2026-12-01",
            input_size=INPUT_SIZE,
            promoted_at=utcnow() - timedelta(days=1),
            metrics={
                "auc": 0.981,
                "sensitivity": 0.97,
                "specificity": 0.93,
                "gate": {"passed": True, "reasons": ["AUC 0.981 >= 0.975 of v-2026-11-01"]},
            },
        )
        run = start_run(session, trigger="nightly")
        finish_run(session, run_id=run.id, status=RunStatus.SUCCEEDED, log="epoch 1/5 ...\ndone\n")
        received = utcnow() - timedelta(minutes=30)
        stored = archive_path(archive, sha256=sha, received_at=received, suffix=".jpeg")
        flagged = add_scan(
            session,
            sha256=sha,
            source_path="inbox/ward-3/film-0001.jpeg",
            stored_path=str(stored),
            status=ScanStatus.DONE,
            received_at=received,
            finished_at=received + timedelta(seconds=4),
            modality="DX",
            view_position="PA",
            patient_ref="3f9a0c6e5b1d4a7f8e2c9b0a1d3e5f70",
            study_instance_uid="1.2.826.0.1.3680043.8.498.1",
            sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
            report_status=ReportStatus.SENT,
            report_sent_at=received + timedelta(seconds=40),
            heatmap_status=HeatmapStatus.DONE,
            heatmap_path=str(heatmap_path(archive, sha256=sha, received_at=received)),
        )
        prediction = add_prediction(session, scan=flagged, model=active, probability=0.91)
        prediction.created_at = received + timedelta(seconds=4)
        prediction.batch_size = 8
        prediction.worker = "celery@gpu-1"
        normal = add_scan(
            session,
            source_path=f"inbox/{HOSTILE_NAME}",
            status=ScanStatus.DONE,
            received_at=received + timedelta(minutes=1),
            finished_at=received + timedelta(minutes=1, seconds=3),
        )
        add_prediction(session, scan=normal, model=active, probability=0.12)
        rejected = add_scan(
            session,
            source_path="inbox/cr_hip.dcm",
            stored_path=str(quarantine / "2026/12/08/abc_cr_hip.dcm"),
            status=ScanStatus.REJECTED,
            error_code="not_a_chest",
            error="cr_hip.dcm: Body Part Examined is 'HIP', not a chest; only chest "
            "radiographs are screened (set CXR_CHEST_BODY_PARTS if this site names them "
            "differently)",
            received_at=received + timedelta(minutes=2),
            finished_at=received + timedelta(minutes=2),
        )
        queued = add_scan(session, received_at=received + timedelta(minutes=3))
        ids = (flagged.id, normal.id, rejected.id, queued.id)
        versions = (active.version, old.version)
        session.add(TrainingRun(trigger="manual", status=RunStatus.FAILED, log="", error="no data"))
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((INPUT_SIZE,) * 2))
    yy, xx = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE]
    cam = np.exp(-((xx - 140) ** 2 + (yy - 100) ** 2) / 1800.0).astype(np.float32)
    words = caption(label="PNEUMONIA", probability=0.91, threshold=0.5, model_version=versions[0])
    heatmap = png_bytes(render(image, cam, words))
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(jpeg)
    heatmap_path(archive, sha256=sha, received_at=received).write_bytes(heatmap)
    return Seeded(*ids, heatmap, *versions)
