"""Heatmaps in the worker: made after the verdict for what CXR_HEATMAPS selects, kept
beside the archived file, recorded on the scan; their failure never touches a result."""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.heatmaps import stale_heatmaps
from db.models import HeatmapStatus, ModelStatus, ModelVersion, Prediction, Scan, ScanStatus
from db.reports import claim_due_reports, mark_new_reports
from db.scans import record_scan
from db.session import session_scope
from db.types import utcnow
from tests.tiny_model import TINY_SIZE, register_model
from worker.filing import Filing
from worker.heatmaps import Heatmaps, catch_up
from worker.imaging import DecodeOptions
from worker.inference import ModelCache
from worker.pipeline.heatmap_picture import CAPTION_HEIGHT, SCALE
from worker.screening import ScreeningContext, screen_batch

PICTURE_SHAPE = (SCALE * TINY_SIZE + CAPTION_HEIGHT, 2 * SCALE * TINY_SIZE, 3)


def _context(factory: sessionmaker[Session], root: Path, mode: str) -> ScreeningContext:
    return ScreeningContext(
        session_factory=factory,
        models=ModelCache(factory),
        decode_options=DecodeOptions(pseudonym_key=b"test-key"),
        executor=ThreadPoolExecutor(2),
        worker_name="test:1",
        filing=Filing(inbox=root / "inbox", archive=root / "archive", quarantine=root / "q"),
        heatmaps=Heatmaps(mode),  # type: ignore[arg-type]
    )


def _drop(factory: sessionmaker[Session], inbox: Path, sources: list[Path]) -> list[int]:
    inbox.mkdir(parents=True, exist_ok=True)
    ids = []
    with session_scope(factory) as session:
        for source in sources:
            path = Path(shutil.copy(source, inbox / source.name))
            scan, _ = record_scan(
                session,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                source_path=str(path),
                size_bytes=path.stat().st_size,
            )
            ids.append(scan.id)
    return ids


@pytest.fixture
def sources(shared_data: Path) -> list[Path]:
    """Two real chest DICOMs, two full-resolution JPEGs and a hip (rejected)."""
    dicom = shared_data / "dicom"
    return [
        dicom / "cr_chest_sc_jpeg_baseline.dcm",
        dicom / "dx_thorax_lateral_animal.dcm",
        *sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:2],
        dicom / "cr_hip_jpeg_lossless.dcm",
    ]


def _scans(factory: sessionmaker[Session]) -> dict[int, Scan]:
    with factory() as session:
        return {s.id: s for s in session.scalars(select(Scan))}


@pytest.mark.parametrize(("mode", "threshold"), [("all", 0.5), ("flagged", 0.0)])
def test_selected_verdicts_get_a_picture_beside_the_archived_file(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    sources: list[Path],
    mode: str,
    threshold: float,
) -> None:
    # Threshold 0: every verdict is PNEUMONIA, so `flagged` selects them all too.
    register_model(session_factory, model_dir=tmp_path / "models", version="t", threshold=threshold)
    ids = _drop(session_factory, tmp_path / "inbox", sources)
    report = screen_batch(_context(session_factory, tmp_path, mode), ids)

    assert len(report.done) == 4
    assert len(report.rejected) == 1
    assert report.heatmaps == sorted(report.done)
    scans = _scans(session_factory)
    for scan_id in report.done:
        scan = scans[scan_id]
        assert scan.heatmap_status is HeatmapStatus.DONE, scan.heatmap_error
        picture = Path(str(scan.heatmap_path))
        archived = Path(str(scan.stored_path))
        assert picture.parent == archived.parent
        assert picture.name == f"{scan.sha256}.heatmap.png"
        with Image.open(picture) as image:
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.shape == PICTURE_SHAPE
        # The left panel is the grey model input; the right one is coloured somewhere
        # (the map is never empty for the tiny model's positive class on these films).
        side = SCALE * TINY_SIZE
        left, right = pixels[:side, :side].astype(int), pixels[:side, side:].astype(int)
        assert np.abs(left[..., 0] - left[..., 1]).max() <= 1
        assert np.abs(right[..., 0] - right[..., 2]).max() > 30
    rejected = scans[report.rejected[0]]
    assert rejected.heatmap_status is None
    assert rejected.heatmap_path is None


@pytest.mark.parametrize(("mode", "threshold"), [("off", 0.0), ("flagged", 1.0)])
def test_no_heatmap_where_none_is_asked_for(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    sources: list[Path],
    mode: str,
    threshold: float,
) -> None:
    # Threshold 1: no verdict is PNEUMONIA, so `flagged` selects none.
    register_model(session_factory, model_dir=tmp_path / "models", version="t", threshold=threshold)
    ids = _drop(session_factory, tmp_path / "inbox", sources)
    report = screen_batch(_context(session_factory, tmp_path, mode), ids)
    assert len(report.done) == 4
    assert report.heatmaps == []
    assert all(s.heatmap_status is None for s in _scans(session_factory).values())
    assert not list((tmp_path / "archive").rglob("*.heatmap.png"))


def _register_dense_only(factory: sessionmaker[Session], model_dir: Path) -> None:
    """A model with no convolutional map: Grad-CAM has nothing to explain."""
    import keras

    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    artifact = model_dir / "dense" / "model.keras"
    artifact.parent.mkdir(parents=True)
    keras.Model(inputs, outputs).save(artifact)
    with session_scope(factory) as session:
        session.add(
            ModelVersion(
                version="dense",
                artifact_path=str(artifact),
                checksum=hashlib.sha256(artifact.read_bytes()).hexdigest(),
                backbone="tiny",
                classes=["NORMAL", "PNEUMONIA"],
                positive_class="PNEUMONIA",
                input_size=TINY_SIZE,
                threshold=0.0,
                metrics={},
                status=ModelStatus.ACTIVE,
            )
        )


def test_a_heatmap_that_cannot_be_made_is_recorded_and_the_result_stands(
    session_factory: sessionmaker[Session], tmp_path: Path, sources: list[Path]
) -> None:
    _register_dense_only(session_factory, tmp_path / "models")
    ids = _drop(session_factory, tmp_path / "inbox", sources[:2])
    report = screen_batch(_context(session_factory, tmp_path, "all"), ids)
    assert sorted(report.done) == sorted(ids)
    assert report.heatmaps == []
    with session_factory() as session:
        assert session.scalar(select(Prediction.id).limit(1)) is not None
    for scan in _scans(session_factory).values():
        assert scan.status is ScanStatus.DONE
        assert scan.heatmap_status is HeatmapStatus.FAILED
        assert "Grad-CAM failed on model dense" in str(scan.heatmap_error)
        assert "convolutional map" in str(scan.heatmap_error)


def test_a_heatmap_a_dead_worker_left_owed_is_made_later_from_the_archive(
    session_factory: sessionmaker[Session], tmp_path: Path, sources: list[Path]
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="t", threshold=0.0)
    ids = _drop(session_factory, tmp_path / "inbox", sources[:2])
    ctx = _context(session_factory, tmp_path, "off")
    screen_batch(ctx, ids)
    # What a worker killed between the verdict's commit and its heatmap leaves behind:
    # the heatmap asked for (pending) and not made; the report waits for it.
    with session_scope(session_factory) as session:
        mark_new_reports(session, enabled=True)
        session.execute(
            update(Scan)
            .where(Scan.id == ids[0])
            .values(heatmap_status=HeatmapStatus.PENDING, updated_at=utcnow() - timedelta(hours=1))
        )
    with session_scope(session_factory) as session:
        due = claim_due_reports(session, now=utcnow(), lease=timedelta(minutes=5), limit=10)
    assert [job.scan_id for job in due] == [ids[1]], "the report waits for its heatmap"

    with session_scope(session_factory) as session:
        stale = stale_heatmaps(session, older_than=timedelta(minutes=5))
    assert stale == [ids[0]]
    with session_scope(session_factory) as session:
        assert stale_heatmaps(session, older_than=timedelta(minutes=5)) == [], "asked once"

    filing = ctx.filing
    assert filing is not None
    made, failed = catch_up(
        session_factory, filing, ctx.models, Heatmaps("flagged"), ctx.decode_options, stale
    )
    assert list(made) == [ids[0]]
    assert failed == {}
    scan = _scans(session_factory)[ids[0]]
    assert scan.heatmap_status is HeatmapStatus.DONE
    assert Path(str(scan.heatmap_path)).is_file()
    with session_scope(session_factory) as session:
        due = claim_due_reports(session, now=utcnow(), lease=timedelta(minutes=5), limit=10)
    assert [job.scan_id for job in due] == [ids[0]]
    assert due[0].heatmap_path == scan.heatmap_path


def test_an_owed_heatmap_is_not_made_with_another_model(
    session_factory: sessionmaker[Session], tmp_path: Path, sources: list[Path]
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="t", threshold=0.0)
    ids = _drop(session_factory, tmp_path / "inbox", sources[:1])
    ctx = _context(session_factory, tmp_path, "off")
    screen_batch(ctx, ids)
    with session_scope(session_factory) as session:
        session.execute(
            update(Scan).where(Scan.id == ids[0]).values(heatmap_status=HeatmapStatus.PENDING)
        )
    register_model(session_factory, model_dir=tmp_path / "models", version="t2", seed=1)
    assert ctx.filing is not None
    made, failed = catch_up(
        session_factory, ctx.filing, ctx.models, Heatmaps("all"), ctx.decode_options, ids
    )
    assert made == {}
    assert "no longer in service" in failed[ids[0]]
    scan = _scans(session_factory)[ids[0]]
    assert scan.heatmap_status is HeatmapStatus.FAILED
    assert not list((tmp_path / "archive").rglob("*.heatmap.png"))


def test_an_archived_file_changed_since_screening_gets_no_heatmap(
    session_factory: sessionmaker[Session], tmp_path: Path, sources: list[Path]
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="t", threshold=0.0)
    ids = _drop(session_factory, tmp_path / "inbox", sources[:1])
    ctx = _context(session_factory, tmp_path, "off")
    screen_batch(ctx, ids)
    scan = _scans(session_factory)[ids[0]]
    archived = Path(str(scan.stored_path))
    archived.chmod(0o600)
    archived.write_bytes(sources[1].read_bytes())  # other bytes under the scan's name
    with session_scope(session_factory) as session:
        session.execute(
            update(Scan).where(Scan.id == ids[0]).values(heatmap_status=HeatmapStatus.PENDING)
        )
    assert ctx.filing is not None
    made, failed = catch_up(
        session_factory, ctx.filing, ctx.models, Heatmaps("all"), ctx.decode_options, ids
    )
    assert made == {}
    assert "not the screened bytes" in failed[ids[0]]
