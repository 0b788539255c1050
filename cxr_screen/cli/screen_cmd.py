"""`cxr-screen screen PATH...`: screen files or folders now, without the service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import CommandError, database_error, settings_or_fail
from cxr_screen.cli.output import OutputFormat, write_rows
from db.results import ResultRow, scan_results
from db.scans import record_scan
from db.session import session_scope
from worker.dispatch import chunks
from worker.imaging.errors import ScreeningError
from worker.pipeline import Prepared, file_sha256, interpret, predict_prepared, prepare_file
from worker.runtime import build_context
from worker.screening import ScreeningContext, screen_batch

COLUMNS = (
    "source_path",
    "sha256",
    "status",
    "label",
    "probability",
    "threshold",
    "model_version",
    "error",
)
_HIDDEN = (".", "~")


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from (
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(_HIDDEN)
            )
        elif path.is_file():
            yield path
        else:
            raise CommandError(f"{path}: no such file or folder")


def screen(
    paths: Annotated[list[Path], typer.Argument(help="Files, or folders searched recursively.")],
    no_record: Annotated[
        bool,
        typer.Option(
            "--no-record",
            help="Print results only; write nothing to the "
            "database (the model registry is still read).",
        ),
    ] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, csv or jsonl.")
    ] = OutputFormat.TABLE,
) -> None:
    """Screen files now with the active model: same decoding, model and batching as the
    service. Files are left where they are (nothing is archived or quarantined).

    Results are recorded in the database like scans from the inbox, so they also
    appear in `cxr-screen results`; a file screened before is shown with its existing
    result. Use `--no-record` to try files without keeping anything.
    """
    settings = settings_or_fail()
    files = list(_files(paths))
    if not files:
        raise CommandError(f"no files found in {', '.join(map(str, paths))}")
    ctx = build_context(settings, file_results=False)
    try:
        model = ctx.models.current()
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    if model is None:
        raise CommandError(
            "no model is active yet: train one with `cxr-screen train` "
            "(or promote one with `cxr-screen models promote VERSION`)"
        )
    rows = (
        _screen_unrecorded(ctx, files, settings.screening.batch_size)
        if no_record
        else _screen_recorded(ctx, files, settings.screening.batch_size)
    )
    write_rows(
        rows,
        columns=COLUMNS,
        output_format=output_format,
        title=f"Screened with model {model.version}",
    )


def _screen_recorded(
    ctx: ScreeningContext, files: list[Path], batch_size: int
) -> list[dict[str, Any]]:
    with session_scope(ctx.session_factory) as session:
        ids = [
            record_scan(
                session,
                sha256=file_sha256(f),
                source_path=str(f.resolve()),
                size_bytes=f.stat().st_size,
            )[0].id
            for f in files
        ]
    # On stderr: stdout carries only the results, for pipes and redirects.
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("screening", total=len(ids))
        for batch in chunks(ids, batch_size):
            screen_batch(ctx, batch)
            progress.advance(task, len(batch))
    with ctx.session_factory() as session:
        found = {
            row.scan_id: ResultRow(**dict(row))
            for row in session.execute(
                scan_results.select().where(scan_results.c.scan_id.in_(ids))
            ).mappings()
        }
    # In the order given, each file once even if named twice.
    return [found[i].to_dict() for i in dict.fromkeys(ids)]


def _screen_unrecorded(
    ctx: ScreeningContext, files: list[Path], batch_size: int
) -> list[dict[str, Any]]:
    model = ctx.models.current()
    assert model is not None  # checked by the caller
    model_input = model.model_input(ctx.decode_options)
    rows: list[dict[str, Any]] = []
    for paths in chunks(files, batch_size):
        outcomes = list(ctx.executor.map(lambda p: prepare_file(p, model_input), paths))
        prepared = [o for o in outcomes if isinstance(o, Prepared)]
        verdicts = iter(
            interpret(predict_prepared(model.predictor, prepared), model.point, model.predictor)
        )
        for path, outcome in zip(paths, outcomes, strict=True):
            if isinstance(outcome, ScreeningError):
                # No verdict, so no bytes to vouch for: the hash of the file as it is now.
                rows.append(
                    {
                        "source_path": str(path),
                        "sha256": file_sha256(path) if path.is_file() else None,
                        "status": outcome.status.value,
                        "error": outcome.message,
                    }
                )
                continue
            verdict = next(verdicts)
            # A screened file's hash is that of the very bytes its verdict was made from.
            rows.append(
                {
                    "source_path": str(path),
                    "sha256": outcome.sha256,
                    "status": "done",
                    "label": verdict.label,
                    "probability": verdict.probability,
                    "threshold": model.threshold,
                    "model_version": model.version,
                }
            )
    return rows
