"""`screen_batch` in-process on real files: claim, decode, predict, store, archive, quarantine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Prediction, Scan, ScanStatus
from db.scans import record_scan
from db.session import session_scope
from tests.tiny_model import register_model
from worker.filing import Filing
from worker.imaging import DecodeOptions
from worker.inference import LoadedModel, ModelCache
from worker.pipeline import NonFiniteOutputError, Prepared, prepare_file
from worker.screening import ScreeningContext, screen_batch


def _drop(factory: sessionmaker[Session], files: list[Path]) -> list[int]:
    ids = []
    with session_scope(factory) as session:
        for path in files:
            scan, _ = record_scan(
                session,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                source_path=str(path),
                size_bytes=path.stat().st_size,
            )
            ids.append(scan.id)
    return ids


@pytest.fixture
def context(session_factory: sessionmaker[Session], tmp_path: Path) -> ScreeningContext:
    return ScreeningContext(
        session_factory=session_factory,
        models=ModelCache(session_factory),
        decode_options=DecodeOptions(pseudonym_key=b"test-key"),
        executor=ThreadPoolExecutor(2),
        worker_name="test:1",
        filing=Filing(
            inbox=tmp_path / "inbox",
            archive=tmp_path / "archive",
            quarantine=tmp_path / "quarantine",
        ),
    )


@pytest.fixture
def inbox(tmp_path: Path, shared_data: Path) -> list[Path]:
    """Three full-resolution JPEGs, two real chest DICOMs, a hip, and a truncated JPEG."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    jpegs = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:4]
    dicoms = [
        "cr_chest_sc_jpeg_baseline.dcm",
        "dx_thorax_lateral_animal.dcm",
        "cr_hip_jpeg_lossless.dcm",
    ]
    sources = jpegs[:3] + [shared_data / "dicom" / name for name in dicoms]
    files = [Path(shutil.copy(src, folder / src.name)) for src in sources]
    corrupt = folder / "corrupt.jpeg"
    corrupt.write_bytes(jpegs[3].read_bytes()[:2000])  # a copy cut off mid-transfer
    return [*files, corrupt]


def test_a_batch_ends_with_every_scan_accounted_for(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    inbox: list[Path],
    tmp_path: Path,
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    ids = _drop(session_factory, inbox)

    report = screen_batch(context, ids)

    assert report.model_version == "tiny-1"
    assert len(report.done) == 5
    assert len(report.rejected) == 1
    assert len(report.failed) == 1
    with session_factory() as session:
        scans = {Path(s.source_path).name: s for s in session.scalars(select(Scan))}
        assert session.scalar(select(func.count()).select_from(Prediction)) == 5
        precisions = set(session.scalars(select(Prediction.inference_precision)))
    assert precisions == {"float32"}
    hip = scans["cr_hip_jpeg_lossless.dcm"]
    assert (hip.status, hip.error_code) == (ScanStatus.REJECTED, "not_a_chest")
    assert (hip.modality, hip.body_part) == ("CR", "HIP"), "what was sent by mistake is recorded"
    broken = scans["corrupt.jpeg"]
    assert broken.status is ScanStatus.FAILED
    assert broken.error
    assert broken.error.startswith("corrupt.jpeg: ")
    for bad in (hip, broken):
        assert bad.stored_path
        assert Path(bad.stored_path).is_file()
        assert "quarantine" in bad.stored_path
        reason = json.loads(Path(bad.stored_path + ".reason.json").read_text())
        assert reason["code"] == bad.error_code
        assert reason["message"] == bad.error
    chest = scans["cr_chest_sc_jpeg_baseline.dcm"]
    assert chest.status is ScanStatus.DONE
    assert chest.format == "dicom"
    assert chest.sop_instance_uid
    assert chest.stored_path
    assert Path(chest.stored_path).is_file()
    assert Path(chest.stored_path).name == f"{chest.sha256}.dcm"
    assert not any(p.exists() for p in inbox), "every file left the inbox"


def test_a_redelivered_batch_writes_nothing_twice(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    inbox: list[Path],
    tmp_path: Path,
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    ids = _drop(session_factory, inbox[:3])
    first = screen_batch(context, ids)
    again = screen_batch(context, ids)
    assert len(first.done) == 3
    assert again.done == []
    assert sorted(again.skipped) == sorted(ids)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 3


def test_without_an_active_model_scans_wait_in_the_queue(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    inbox: list[Path],
) -> None:
    ids = _drop(session_factory, inbox[:2])
    report = screen_batch(context, ids)
    assert report.waiting == ids
    with session_factory() as session:
        statuses = set(session.scalars(select(Scan.status)))
    assert statuses == {ScanStatus.QUEUED}
    assert all(p.exists() for p in inbox[:2])


def test_a_newly_promoted_model_is_used_for_the_next_batch(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    inbox: list[Path],
    tmp_path: Path,
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    ids = _drop(session_factory, inbox[:4])
    assert screen_batch(context, ids[:2]).model_version == "tiny-1"
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-2", seed=1)
    assert screen_batch(context, ids[2:]).model_version == "tiny-2"
    with session_factory() as session:
        versions = dict(
            session.execute(select(Prediction.scan_id, Prediction.model_version_id)).all()
        )
    assert len(set(versions.values())) == 2


def test_a_mixed_precision_worker_records_the_same_labels(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    inbox: list[Path],
    tmp_path: Path,
) -> None:
    """`CXR_PRECISION=mixed_bfloat16` serves the active model with 16-bit compute; its
    probabilities stay within 0.02 of a float32 worker's on the same real files."""
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    float32 = ModelCache(session_factory).current()
    assert float32 is not None
    # No filing: the files stay where they are, to be decoded again for the reference.
    mixed_context = dataclasses.replace(
        context, models=ModelCache(session_factory, precision="mixed_bfloat16"), filing=None
    )
    ids = _drop(session_factory, inbox[:3])
    report = screen_batch(mixed_context, ids)
    assert len(report.done) == 3
    served = mixed_context.models.current()
    assert served is not None
    assert served.predictor.keras_model.layers[2].dtype_policy.name == "mixed_bfloat16"
    with session_factory() as session:
        recorded = {
            row.scan_id: row.probability
            for row in session.execute(select(Prediction.scan_id, Prediction.probability))
        }
        precisions = set(session.scalars(select(Prediction.inference_precision)))
        paths = {
            row.id: row.source_path
            for row in session.execute(select(Scan.id, Scan.source_path).where(Scan.id.in_(ids)))
        }
    assert precisions == {"mixed_bfloat16"}, "an audit can tell 16-bit answers apart"
    model_input = float32.model_input(context.decode_options)
    for scan_id in ids:
        prepared = prepare_file(Path(paths[scan_id]), model_input)
        assert isinstance(prepared, Prepared)
        reference = float32.classify(prepared.image[None])[0].probability
        assert abs(recorded[scan_id] - reference) < 0.02


class _NaNModels:
    """A model cache serving a model that answers NaN for everything."""

    def __init__(self, real: ModelCache) -> None:
        self._real = real

    def current(self) -> LoadedModel | None:
        loaded = self._real.current()
        assert loaded is not None

        class _NaN:
            def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
                return np.full((len(images), 2), np.nan, dtype=np.float32)

        predictor = dataclasses.replace(loaded.predictor, keras_model=_NaN())
        return dataclasses.replace(loaded, predictor=predictor)


def test_nan_output_goes_back_to_the_queue_and_records_nothing(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    inbox: list[Path],
    tmp_path: Path,
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    ids = _drop(session_factory, inbox[:3])
    broken = dataclasses.replace(context, models=_NaNModels(context.models))  # type: ignore[arg-type]
    with pytest.raises(NonFiniteOutputError):
        screen_batch(broken, ids)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 0
        assert set(session.scalars(select(Scan.status))) == {ScanStatus.QUEUED}
    assert all(p.exists() for p in inbox[:3]), "no file was moved"
    # The same scans are screened once the model answers again.
    assert len(screen_batch(context, ids).done) == 3
