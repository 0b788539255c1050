"""`cxr-screen reports list` and `reports resend` on a real database, as a person runs them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from db.models import ReportStatus, Scan, ScanStatus
from db.session import make_engine, make_session_factory, session_scope
from db.types import utcnow
from tests.cli_runner import run_cli
from tests.factories import add_scan, hours_ago

# The error a PACS might send back: two lines and a terminal escape sequence.
HOSTILE_ERROR = "status 0xA700 (Out of resources)\nsecond line \x1b[31mred"
SENT_UID = "2.25.1234567890"


@dataclass(frozen=True, slots=True)
class Seeded:
    """The scan ids of each kind of row."""

    failed: int
    sent: int
    pending: int
    disabled: int
    jpeg: int
    queued_dicom: int
    rejected_dicom: int
    unmarked_dicom: int


def _dicom(**values: object) -> dict[str, object]:
    return {"format": "dicom", "status": ScanStatus.DONE, **values}


def _seed(database_url: str) -> Seeded:
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            seeded = Seeded(
                failed=add_scan(
                    session,
                    **_dicom(
                        report_status=ReportStatus.FAILED,
                        report_attempts=5,
                        report_error=HOSTILE_ERROR,
                        received_at=hours_ago(8),
                    ),
                ).id,
                sent=add_scan(
                    session,
                    **_dicom(
                        report_status=ReportStatus.SENT,
                        report_attempts=1,
                        report_sent_at=hours_ago(6),
                        report_sop_instance_uid=SENT_UID,
                        report_path="/archive/reports/sent.sr.dcm",
                        received_at=hours_ago(7),
                    ),
                ).id,
                pending=add_scan(
                    session,
                    **_dicom(
                        report_status=ReportStatus.PENDING,
                        report_attempts=2,
                        report_next_attempt_at=utcnow() + timedelta(hours=1),
                        report_error="could not open an association",
                        received_at=hours_ago(6),
                    ),
                ).id,
                disabled=add_scan(
                    session,
                    **_dicom(report_status=ReportStatus.DISABLED, received_at=hours_ago(5)),
                ).id,
                jpeg=add_scan(session, status=ScanStatus.DONE, received_at=hours_ago(4)).id,
                queued_dicom=add_scan(
                    session, format="dicom", status=ScanStatus.QUEUED, received_at=hours_ago(3)
                ).id,
                rejected_dicom=add_scan(
                    session, format="dicom", status=ScanStatus.REJECTED, received_at=hours_ago(2)
                ).id,
                unmarked_dicom=add_scan(session, **_dicom(received_at=hours_ago(1))).id,
            )
    finally:
        engine.dispose()
    return seeded


def _scan(database_url: str, scan_id: int) -> Scan:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            scan = session.get(Scan, scan_id)
            assert scan is not None
            return scan
    finally:
        engine.dispose()


def _ready(database_url: str, tmp_path: Path) -> tuple[dict[str, str], Seeded]:
    # A wide terminal for rich's error boxes, so that a message is not folded mid-phrase.
    env = {"CXR_DATABASE_URL": database_url, "COLUMNS": "300"}
    upgraded = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    return env, _seed(database_url)


def test_list_as_json_has_counts_and_only_report_rows_newest_first(
    database_url: str, tmp_path: Path
) -> None:
    env, seeded = _ready(database_url, tmp_path)
    out = run_cli("reports", "list", "--format", "json", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["counts"] == {"pending": 1, "sent": 1, "failed": 1, "disabled": 1}
    rows = document["reports"]
    assert [r["scan_id"] for r in rows] == [
        seeded.disabled,
        seeded.pending,
        seeded.sent,
        seeded.failed,
    ], "newest scan first; JPEG, unscreened and unmarked scans have no report row"
    failed = rows[3]
    assert failed["report_status"] == "failed"
    assert failed["report_attempts"] == 5
    assert failed["report_error"] == HOSTILE_ERROR, "JSON keeps the exact text"
    assert "\\u001b" in out.stdout
    sent = rows[2]
    assert sent["report_sop_instance_uid"] == SENT_UID
    assert sent["report_sent_at"].endswith("+00:00")
    assert rows[1]["report_next_attempt_at"] is not None

    only_failed = run_cli("reports", "list", "--failed", "-f", "json", cwd=tmp_path, env=env)
    assert [r["scan_id"] for r in json.loads(only_failed.stdout)["reports"]] == [seeded.failed]
    assert json.loads(only_failed.stdout)["counts"]["sent"] == 1, "counts are over every scan"


def test_list_as_a_table_shows_counts_first_and_the_error_on_one_escaped_line(
    database_url: str, tmp_path: Path
) -> None:
    env, _ = _ready(database_url, tmp_path)
    out = run_cli("reports", "list", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "reports: 1 pending, 1 sent, 1 failed, 1 disabled"
    assert "\x1b" not in out.stdout, "a PACS's escape sequence never reaches the terminal"
    assert "(Out of resources)\\nsecond line \\x1b[31mred" in out.stdout
    assert SENT_UID in out.stdout

    sent = run_cli("reports", "list", "--status", "sent", cwd=tmp_path, env=env)
    assert SENT_UID in sent.stdout
    assert "Out of resources" not in sent.stdout

    newest = run_cli("reports", "list", "--limit", "1", cwd=tmp_path, env=env)
    assert "use --limit 0 for all" in newest.stderr
    assert "could not open" not in newest.stdout, "only the newest (the disabled one)"

    clash = run_cli("reports", "list", "--failed", "--status", "sent", cwd=tmp_path, env=env)
    assert clash.returncode == 2
    assert "--failed means --status failed" in clash.stderr


def test_resend_failed_and_named_sent_makes_them_due_now_with_attempts_reset(
    database_url: str, tmp_path: Path
) -> None:
    env, seeded = _ready(database_url, tmp_path)
    before = utcnow()
    out = run_cli("reports", "resend", "--failed", str(seeded.sent), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == (
        f"queued 2 reports to send again, was 1 failed, 1 sent: "
        f"scans {seeded.failed}, {seeded.sent}"
    )
    assert "reports are off" in out.stderr, "says that nothing goes out until they are on"
    for scan_id in (seeded.failed, seeded.sent):
        scan = _scan(database_url, scan_id)
        assert scan.report_status is ReportStatus.PENDING
        assert scan.report_attempts == 0
        assert scan.report_error is None
        assert scan.report_next_attempt_at is not None
        assert before - timedelta(seconds=5) <= scan.report_next_attempt_at <= utcnow()
    sent = _scan(database_url, seeded.sent)
    assert sent.report_sop_instance_uid == SENT_UID, "the same instance goes out again"
    assert sent.report_path == "/archive/reports/sent.sr.dcm"
    assert sent.report_sent_at is not None, "when the destination last stored it"
    untouched = _scan(database_url, seeded.pending)
    assert untouched.report_attempts == 2


def test_resend_refuses_scans_without_a_report_by_id_and_queues_the_rest(
    database_url: str, tmp_path: Path
) -> None:
    env, seeded = _ready(database_url, tmp_path)
    missing = seeded.unmarked_dicom + 1000
    out = run_cli(
        "reports", "resend",
        str(seeded.jpeg), str(seeded.queued_dicom), str(seeded.rejected_dicom),
        str(seeded.unmarked_dicom), str(missing), str(seeded.pending), str(seeded.pending),
        cwd=tmp_path,
        env={**env, "CXR_REPORTS_ENABLED": "true", "CXR_REPORT_DESTINATION": "PACS@pacs:104"},
    )  # fmt: skip
    assert out.returncode == 1, "some named scans could not be queued"
    refusals = dict(line.split(" not queued: ", 1) for line in out.stderr.splitlines())
    assert refusals == {
        f"cxr-screen: scan {seeded.jpeg}": "it is a JPEG scan: reports go back to the PACS "
        "for DICOM scans only",
        f"cxr-screen: scan {seeded.queued_dicom}": "it has no result to report (status queued); "
        "its report follows once it is screened",
        f"cxr-screen: scan {seeded.rejected_dicom}": "it has no result to report (status rejected)",
        f"cxr-screen: scan {seeded.unmarked_dicom}": "it was screened, but the report sender "
        "has not given it a report status yet; it does on its next pass",
        f"cxr-screen: scan {missing}": "there is no such scan (`cxr-screen reports list` shows "
        "the scans with a report)",
    }
    assert out.stdout.splitlines() == [
        f"queued 1 report to send again, was 1 pending: scan {seeded.pending}",
        "the report sender sends them to PACS@pacs:104 on its next pass (every 30 s, in "
        "`cxr-screen up` or `beat`)",
    ]
    pending = _scan(database_url, seeded.pending)
    assert pending.report_attempts == 0
    assert pending.report_error is None
    for refused in (seeded.jpeg, seeded.queued_dicom, seeded.unmarked_dicom):
        assert _scan(database_url, refused).report_status is None


def test_resend_names_what_to_give_and_says_when_nothing_has_failed(
    database_url: str, tmp_path: Path
) -> None:
    env, _ = _ready(database_url, tmp_path)
    nothing = run_cli("reports", "resend", cwd=tmp_path, env=env)
    assert nothing.returncode == 2
    assert "name the scans whose reports to send again (SCAN_ID ...), or give --failed" in (
        nothing.stderr
    )
    assert "Traceback" not in nothing.stderr
    zero = run_cli("reports", "resend", "0", cwd=tmp_path, env=env)
    assert zero.returncode == 2

    first = run_cli("reports", "resend", "--failed", cwd=tmp_path, env=env)
    assert first.returncode == 0
    again = run_cli("reports", "resend", "--failed", cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert again.stdout.strip() == "no report queued: no report has failed"


def test_reports_on_a_database_without_schema_says_to_upgrade(tmp_path: Path) -> None:
    env = {"CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    for args in (("list",), ("resend", "--failed")):
        result = run_cli("reports", *args, cwd=tmp_path, env=env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "run `cxr-screen db upgrade` first" in lines[0]
