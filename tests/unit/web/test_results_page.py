"""The results page: the `scan_results` rows filtered as the CLI does, counts, CSV, paging."""

from __future__ import annotations

import csv
import io

from db.models import ScanStatus
from db.session import session_scope
from tests.factories import add_scan
from tests.unit.web.conftest import Web
from tests.web_seed import HOSTILE_NAME


def _scan_links(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('href="/scans/')[1:]]


def test_rows_come_newest_first_with_counts_per_status(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get("/results").text
    seeded = web.seeded
    ids = [seeded.queued, seeded.rejected, seeded.normal, seeded.flagged]
    assert _scan_links(page) == [str(i) for i in ids]
    assert "done: <strong>2</strong>" in page
    assert "rejected: <strong>1</strong>" in page
    assert "queued: <strong>1</strong>" in page


def test_filters_narrow_the_rows_as_the_cli_options_do(web: Web) -> None:
    web.sign_in_reader()
    seeded = web.seeded
    cases = {
        "status=done": [seeded.normal, seeded.flagged],
        "label=PNEUMONIA": [seeded.flagged],
        "min_probability=0.5": [seeded.flagged],
        f"model_version={seeded.active_version}": [seeded.normal, seeded.flagged],
        "model_version=nope": [],
        "since=2h&status=rejected": [seeded.rejected],
        "until=2000-01-01": [],
    }
    for query, expected in cases.items():
        page = web.client.get(f"/results?{query}")
        assert page.status_code == 200, query
        assert _scan_links(page.text) == [str(i) for i in expected], query


def test_a_filter_that_is_not_understood_says_what_is_expected(web: Web) -> None:
    web.sign_in_reader()
    for query, words in (("status=lost", "choose one of"), ("min_probability=2", "from 0 to 1"),
                         ("since=yesterday", "is not a time"), ("page=0", "page:")):  # fmt: skip
        page = web.client.get(f"/results?{query}")
        assert page.status_code == 400
        assert words in page.text
        assert _scan_links(page.text) == []


def test_pages_of_fifty_link_to_older_and_newer(web: Web) -> None:
    with session_scope(web.factory) as session:
        for _ in range(55):
            add_scan(session, status=ScanStatus.QUEUED)
    web.sign_in_reader()
    first = web.client.get("/results").text
    assert len(_scan_links(first)) == 50
    assert "page=2" in first
    second = web.client.get("/results?page=2").text
    assert len(_scan_links(second)) == 9  # 55 + the 4 seeded
    assert "page=1" in second
    assert not set(_scan_links(first)) & set(_scan_links(second))


def test_the_csv_holds_every_row_of_the_filter_and_neutralises_formulas(web: Web) -> None:
    with session_scope(web.factory) as session:
        add_scan(session, source_path='=HYPERLINK("http://x")', status=ScanStatus.FAILED)
        for _ in range(60):
            add_scan(session, status=ScanStatus.FAILED)
    web.sign_in_reader()
    response = web.client.get("/results.csv?status=failed")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 61  # every page
    assert {row["status"] for row in rows} == {"failed"}
    assert '\'=HYPERLINK("http://x")' in {row["source_path"] for row in rows}


def test_a_file_name_with_markup_is_shown_as_text(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get("/results").text
    assert HOSTILE_NAME not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "<script" not in page
