"""Invariants every end-to-end run must keep: results bound to bytes, nothing lost, nothing
outside the service's folders touched. Checked at the end of each end-to-end test."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Duplicate, Prediction, Scan, ScanStatus
from db.session import make_engine, make_session_factory
from worker.filing import REASON_SUFFIX, Filing


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's content."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """Every file below `root` (symlinks as their target text) and its SHA-256."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = f"symlink -> {path.readlink()}"
        elif path.is_file():
            found[name] = sha256_of(path)
    return found


def _kept(filing: Filing) -> set[str]:
    """SHA-256 of every file kept in the archive and the quarantine (reason files aside)."""
    return {
        sha256_of(path)
        for root in (filing.archive, filing.quarantine)
        if root.exists()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and not path.name.endswith(REASON_SUFFIX)
    }


def assert_invariants(
    factory_or_url: sessionmaker[Session] | str,
    filing: Filing,
    *,
    dropped: Iterable[bytes],
    allow_unkept: Collection[str] = (),
    outside: dict[Path, dict[str, str]] | None = None,
) -> None:
    """Fail unless the service kept its promises.

    - every `done` scan has one prediction per model at most and its stored file's SHA-256
      equals the row's, inside the archive;
    - every file ever dropped (`dropped`, by content) is in the archive or quarantine
      byte-identical, except contents in `allow_unkept` (bytes the test itself destroyed,
      e.g. by rewriting a file in place before the service could keep it);
    - every finished (done/rejected) scan's stored path holds its bytes;
    - every folder in `outside` (a digest taken before the run) is unchanged.
    """
    if isinstance(factory_or_url, str):
        engine = make_engine(factory_or_url)
        factory = make_session_factory(engine)
    else:
        engine, factory = None, factory_or_url
    try:
        with factory() as session:
            scans = list(session.scalars(select(Scan)))
            predictions = list(session.scalars(select(Prediction)))
            duplicates = list(session.scalars(select(Duplicate)))
    finally:
        if engine is not None:
            engine.dispose()
    problems: list[str] = []
    per_model: dict[tuple[int, int], int] = {}
    for prediction in predictions:
        key = (prediction.scan_id, prediction.model_version_id)
        per_model[key] = per_model.get(key, 0) + 1
    problems += [
        f"scan {s} has {n} predictions by model {m}" for (s, m), n in per_model.items() if n > 1
    ]
    predicted = {p.scan_id for p in predictions}
    for scan in scans:
        stored = Path(scan.stored_path) if scan.stored_path else None
        if scan.status is ScanStatus.DONE:
            if scan.id not in predicted:
                problems.append(f"done scan {scan.id} has no prediction")
            if stored is None or not stored.is_file():
                problems.append(f"done scan {scan.id}: stored file {stored} is missing")
            elif sha256_of(stored) != scan.sha256:
                problems.append(f"done scan {scan.id}: {stored} does not hold its bytes")
            elif not str(stored).startswith(str(filing.archive)):
                problems.append(f"done scan {scan.id}: {stored} is not in the archive")
        elif scan.id in predicted and scan.status is not ScanStatus.PROCESSING:
            problems.append(f"{scan.status.value} scan {scan.id} has a prediction")
        if (
            scan.status is ScanStatus.REJECTED
            and stored is not None
            and stored.is_file()
            and sha256_of(stored) != scan.sha256
        ):
            problems.append(f"rejected scan {scan.id}: {stored} does not hold its bytes")
    for duplicate in duplicates:
        if duplicate.stored_path and not Path(duplicate.stored_path).is_file():
            problems.append(f"duplicate {duplicate.id}: {duplicate.stored_path} is missing")
    kept = _kept(filing)
    for content in dropped:
        digest = hashlib.sha256(content).hexdigest()
        if digest not in kept and digest not in allow_unkept:
            problems.append(f"dropped content {digest[:12]} is in neither archive nor quarantine")
    for folder, before in (outside or {}).items():
        if tree_digest(folder) != before:
            problems.append(f"{folder} changed, though it is outside the service's folders")
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
