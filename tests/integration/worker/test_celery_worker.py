"""Real Celery worker processes on real brokers and databases: nothing is ever lost.

Each stack is the embedded default (SQLite database, SQLite broker) or Redis +
PostgreSQL. The worker runs as `cxr-screen worker` in its own process, exactly as in
production, with short timeouts so recovery happens within the test.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import HeatmapStatus, ModelVersion, Prediction, Scan, ScanStatus
from db.scans import mark_sent, record_scan
from db.session import make_engine, make_session_factory, session_scope
from db.types import utcnow
from tests.conftest import fresh_database
from tests.invariants import assert_invariants
from tests.processes import RedisServer, Service, wait_until
from tests.tiny_model import register_model
from worker.celery_app import create_app
from worker.dispatch import send_batches
from worker.filing import Filing
from worker.settings import Settings

pytestmark = pytest.mark.integration
FINAL = (ScanStatus.DONE, ScanStatus.REJECTED, ScanStatus.FAILED)


@dataclass
class Stack:
    """Database, broker and folders of one test deployment."""

    root: Path
    env: dict[str, str]
    factory: sessionmaker[Session]
    redis: RedisServer | None
    contents: dict[Path, bytes] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return Settings(**{k.removeprefix("CXR_").lower(): v for k, v in self.env.items()})  # type: ignore[arg-type]

    def worker(self, name: str = "worker") -> Service:
        service = Service(["worker"], cwd=self.root, env=self.env, log=self.root / f"{name}.log")
        service.wait_for_log("ready.")
        return service

    def beat(self) -> Service:
        return Service(["beat"], cwd=self.root, env=self.env, log=self.root / "beat.log")

    def record(self, files: list[Path]) -> list[int]:
        """What the watcher does: a row per file, written before any task is sent."""
        self.contents.update((f, f.read_bytes()) for f in files)
        with session_scope(self.factory) as session:
            return [
                record_scan(
                    session,
                    sha256=hashlib.sha256(f.read_bytes()).hexdigest(),
                    source_path=str(f),
                    size_bytes=f.stat().st_size,
                )[0].id
                for f in files
            ]

    def send(self, ids: list[int], batch_size: int = 4) -> list[int]:
        app = create_app(self.settings, include=())
        sent = send_batches(app, ids, batch_size=batch_size)
        with session_scope(self.factory) as session:
            mark_sent(session, scan_ids=sent)
        return sent

    def statuses(self) -> dict[int, ScanStatus]:
        with self.factory() as session:
            return dict(session.execute(select(Scan.id, Scan.status)).all())

    def wait_final(self, ids: list[int], timeout: float = 120) -> None:
        wait_until(
            lambda: all(self.statuses().get(i) in FINAL for i in ids),
            timeout=timeout,
            what=f"scans {ids} to finish",
        )


@pytest.fixture(params=["embedded", "redis+postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    embedded = request.param == "embedded"
    redis = None if embedded else RedisServer(tmp_path / "redis")
    with fresh_database("sqlite" if embedded else "postgresql", tmp_path) as url:
        engine = make_engine(url)
        upgrade(engine)
        if redis is not None:
            redis.start()
        env = {
            "CXR_DATABASE_URL": url,
            "CXR_BROKER_URL": (
                f"sqla+sqlite:///{tmp_path / 'broker.db'}" if redis is None else redis.url
            ),
            "CXR_ARCHIVE": str(tmp_path / "archive"),
            "CXR_QUARANTINE": str(tmp_path / "quarantine"),
            "CXR_MODEL_DIR": str(tmp_path / "models"),
            "CXR_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef",
            "CXR_BATCH_SIZE": "4",
            "CXR_CLAIM_TIMEOUT_S": "6",
            "CXR_REQUEUE_AFTER_S": "4",
            "CXR_RECONCILE_INTERVAL_S": "1",
        }
        try:
            yield Stack(tmp_path, env, make_session_factory(engine), redis)
        finally:
            if redis is not None:
                redis.stop()
            engine.dispose()


@pytest.fixture
def fullres(shared_data: Path, tmp_path: Path) -> list[Path]:
    """Copies of the 60 distinct full-resolution chest X-rays, in an inbox folder."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sources = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))
    return [Path(shutil.copy(src, inbox / src.name)) for src in sources]


def _predictions_per_scan(stack: Stack) -> dict[int, int]:
    with stack.factory() as session:
        return dict(
            session.execute(
                select(Prediction.scan_id, func.count()).group_by(Prediction.scan_id)
            ).all()
        )


def _assert_invariants(stack: Stack, files: list[Path]) -> None:
    """Results bound to bytes, every file kept (read before the run moved them)."""
    contents = [stack.contents[f] for f in files]
    filing = Filing(
        inbox=stack.root / "inbox",
        archive=stack.root / "archive",
        quarantine=stack.root / "quarantine",
    )
    assert_invariants(stack.factory, filing, dropped=contents)


def test_real_files_each_get_one_result_and_a_corrupt_one_is_quarantined(
    stack: Stack, fullres: list[Path], dicom_dir: Path, tmp_path: Path
) -> None:
    register_model(stack.factory, model_dir=tmp_path / "models", version="tiny-1")
    dicom = Path(
        shutil.copy(
            dicom_dir / "cr_chest_pa_mono1_j2k_lossless.dcm", tmp_path / "inbox" / "chest.dcm"
        )
    )
    corrupt = tmp_path / "inbox" / "cut.jpeg"
    corrupt.write_bytes(fullres[10].read_bytes()[:3000])
    files = [*fullres[:5], dicom, corrupt]
    ids = stack.record(files)
    worker = stack.worker()
    try:
        stack.send(ids)
        stack.wait_final(ids)
    finally:
        worker.stop()
    statuses = stack.statuses()
    assert [statuses[i] for i in ids] == [ScanStatus.DONE] * 6 + [ScanStatus.FAILED]
    assert _predictions_per_scan(stack) == dict.fromkeys(ids[:6], 1)
    quarantined = list((tmp_path / "quarantine").rglob("*cut.jpeg"))
    assert len(quarantined) == 1
    assert "cut.jpeg" in Path(str(quarantined[0]) + ".reason.json").read_text()
    _assert_invariants(stack, files)


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    stack: Stack, fullres: list[Path], tmp_path: Path
) -> None:
    register_model(stack.factory, model_dir=tmp_path / "models", version="tiny-1")
    ids = stack.record(fullres[:40])
    first = stack.worker("first")
    stack.send(ids)
    wait_until(
        lambda: ScanStatus.PROCESSING in stack.statuses().values(),
        timeout=60,
        what="the worker to be in the middle of a batch",
        interval=0.05,
    )
    first.kill()
    interrupted = [i for i, s in stack.statuses().items() if s is ScanStatus.PROCESSING]
    assert interrupted, "the kill must land while scans are claimed"

    beat = stack.beat()
    second = stack.worker("second")
    try:
        stack.wait_final(ids, timeout=180)
    finally:
        second.stop()
        beat.stop()
    assert set(stack.statuses().values()) == {ScanStatus.DONE}
    assert _predictions_per_scan(stack) == dict.fromkeys(ids, 1)
    with stack.factory() as session:
        attempts = dict(session.execute(select(Scan.id, Scan.attempts)).all())
    assert all(attempts[i] >= 2 for i in interrupted), "the interrupted scans were retried"
    _assert_invariants(stack, fullres[:40])


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_a_heatmap_a_dead_worker_left_owed_is_made_through_reconcile(
    stack: Stack, fullres: list[Path], tmp_path: Path
) -> None:
    register_model(stack.factory, model_dir=tmp_path / "models", version="tiny-1")
    ids = stack.record(fullres[:3])
    stack.env["CXR_HEATMAPS"] = "off"
    worker = stack.worker()
    try:
        stack.send(ids)
        stack.wait_final(ids)
    finally:
        worker.stop()
    # What a worker killed between a verdict's commit and its heatmap leaves: owed.
    with session_scope(stack.factory) as session:
        session.execute(
            update(Scan)
            .where(Scan.id.in_(ids[:2]))
            .values(heatmap_status=HeatmapStatus.PENDING, updated_at=utcnow() - timedelta(hours=1))
        )
    beat, worker = stack.beat(), stack.worker("second")

    def made() -> list[int]:
        with stack.factory() as session:
            return sorted(
                session.scalars(select(Scan.id).where(Scan.heatmap_status == HeatmapStatus.DONE))
            )

    try:
        wait_until(lambda: made() == ids[:2], timeout=90, what="the owed heatmaps")
    finally:
        worker.stop()
        beat.stop()
    with stack.factory() as session:
        scans = {s.id: s for s in session.scalars(select(Scan))}
    for scan_id in ids[:2]:
        picture = Path(str(scans[scan_id].heatmap_path))
        assert picture.is_file()
        assert picture.parent == Path(str(scans[scan_id].stored_path)).parent
    assert scans[ids[2]].heatmap_status is None, "none was asked for the third"


def test_promoting_a_model_mid_stream_switches_later_predictions(
    stack: Stack, fullres: list[Path], tmp_path: Path
) -> None:
    register_model(stack.factory, model_dir=tmp_path / "models", version="tiny-1")
    early, late = stack.record(fullres[:8]), stack.record(fullres[8:16])
    worker = stack.worker()
    try:
        stack.send(early)
        stack.wait_final(early)
        register_model(stack.factory, model_dir=tmp_path / "models", version="tiny-2", seed=7)
        stack.send(late)
        stack.wait_final(late)
    finally:
        worker.stop()
    with stack.factory() as session:
        made_by = dict(
            session.execute(
                select(Prediction.scan_id, ModelVersion.version).join(ModelVersion)
            ).all()
        )
    assert {made_by[i] for i in early} == {"tiny-1"}
    assert {made_by[i] for i in late} == {"tiny-2"}


# The embedded broker is a file beside the database: there is no server to stop.
@pytest.mark.parametrize("stack", ["redis+postgresql"], indirect=True)
def test_scans_queued_while_redis_is_down_all_finish_after_it_returns(
    stack: Stack, fullres: list[Path], tmp_path: Path
) -> None:
    assert stack.redis is not None
    register_model(stack.factory, model_dir=tmp_path / "models", version="tiny-1")
    sent_before = stack.record(fullres[:6])
    assert stack.send(sent_before) == sent_before  # in Redis, which keeps nothing on disk
    stack.redis.stop()
    queued_during = stack.record(fullres[6:12])
    assert stack.send(queued_during) == [], "nothing can be sent while Redis is down"
    beat = stack.beat()
    worker = Service(["worker"], cwd=stack.root, env=stack.env, log=stack.root / "w.log")
    try:
        stack.redis.start()
        stack.wait_final(sent_before + queued_during, timeout=180)
    finally:
        worker.stop()
        beat.stop()
    assert set(stack.statuses().values()) == {ScanStatus.DONE}
    assert _predictions_per_scan(stack) == dict.fromkeys(sent_before + queued_during, 1)
