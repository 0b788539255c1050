"""`cxr-screen train`, `evaluate` and `models list|promote|rollback`."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import CommandError, database_error, engine_for, settings_or_fail
from cxr_screen.cli.output import OutputFormat, inert, printable, write_rows
from cxr_screen.model_changes import promote_through_gate, roll_back
from db import model_registry
from db.session import make_session_factory, session_scope
from trainer.errors import TrainerError
from worker.accelerator import PRECISIONS, Precision
from worker.settings import Settings

models_app = typer.Typer(
    help="The model registry: list versions, promote one through the gate, roll back.",
    no_args_is_help=True,
)


class ReportFormat(enum.StrEnum):
    """How `train` and `evaluate` print their figures."""

    TABLE = "table"
    JSON = "json"


@contextmanager
def _friendly_errors(settings: Settings) -> Iterator[None]:
    """Turn the trainer's and the database's errors into one-line `CommandError`s."""
    try:
        yield
    except TrainerError as exc:
        raise CommandError(str(exc)) from None
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _figures_table(title: str, figures: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("n", "accuracy", "auc", "sensitivity", "specificity", "ppv", "npv",
                 "balanced_accuracy", "threshold"):  # fmt: skip
        table.add_row(name, _fmt(figures.get(name)))
    half = figures.get("at_threshold_0.5") or {}
    for name in ("accuracy", "sensitivity", "specificity"):
        table.add_row(f"{name} at 0.5", _fmt(half.get(name)))
    classes = figures.get("classes", [])
    for i, row in enumerate(figures.get("confusion_matrix", [])):
        table.add_row(f"true {classes[i]} -> predicted {'/'.join(classes)}",
                      " / ".join(str(v) for v in row))  # fmt: skip
    for name, f in (figures.get("per_class") or {}).items():
        table.add_row(
            f"{name}: precision / recall / F1 (n={f['support']})",
            " / ".join(_fmt(f[k]) for k in ("precision", "recall", "f1")),
        )
    return table


def _shifted_table(title: str, figures: dict[str, Any]) -> Table:
    table = Table(title=title)
    for name in ("site change", "n", "AUC", "sensitivity", "specificity"):
        table.add_column(name, justify="left" if name == "site change" else "right")
    rows = [("all changes", figures), *figures["shifts"].items()]
    if figures.get("held_out"):
        rows.append(("never trained on: " + ", ".join(figures["held_out_shifts"]),
                     figures["held_out"]))  # fmt: skip
    for name, f in rows:
        table.add_row(
            name, str(f["n"]), _fmt(f["auc"]), _fmt(f["sensitivity"]), _fmt(f["specificity"])
        )
    return table


def train(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Labelled folders (train/<CLASS>/, val/<CLASS>/); default CXR_DATA_DIR."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Train even if the data did not change.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="Default CXR_TRAIN_EPOCHS.")] = None,
    fine_tune: Annotated[
        bool | None,
        typer.Option(
            "--fine-tune/--head-only",
            help="Also train the backbone's last block after the head, or the head alone; "
            "default CXR_FINE_TUNE (on).",
        ),
    ] = None,
    augment_views: Annotated[
        int | None,
        typer.Option(min=0, help="Stored augmented copies per training image (shear/zoom/flip)."),
    ] = None,
    site_views: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Stored copies per training image under random site changes (framing, "
            "grey-level curve, noise) and shear/zoom/flip.",
        ),
    ] = None,
    min_sensitivity: Annotated[
        float | None,
        typer.Option(min=0.5, max=1.0, help="Sensitivity the chosen threshold must reach."),
    ] = None,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="table for people, json for scripts.")
    ] = ReportFormat.TABLE,
) -> None:
    """Train, evaluate and register a model now (as the nightly run does), then gate it."""
    settings = settings_or_fail()
    if data_dir is not None:
        if not data_dir.is_dir():
            raise CommandError(f"--data-dir {data_dir} is not a folder")
        settings = settings.model_copy(update={"data_dir": data_dir})
    # Imported here, after the cheap checks: TensorFlow takes seconds to load.
    from trainer.nightly import run_training
    from trainer.train import TrainConfig

    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["epochs"] = epochs
    if fine_tune is not None:
        overrides["fine_tune"] = fine_tune
    if augment_views is not None:
        overrides["augment_views"] = augment_views
    if site_views is not None:
        overrides["site_views"] = site_views
    if min_sensitivity is not None:
        overrides["min_sensitivity"] = min_sensitivity
    err = Console(stderr=True)
    with _friendly_errors(settings), _progress(err) as progress:
        outcome = run_training(
            settings,
            trigger="manual",
            force=force,
            config=TrainConfig.from_settings(settings, **overrides),
            progress=progress,
        )
    if outcome["status"] == "busy":
        raise CommandError("another training run is in progress (it holds the training lock)")
    if output_format is ReportFormat.JSON:
        sys.stdout.write(json.dumps(outcome, indent=2, default=str) + "\n")
        return
    out = Console()
    if outcome["status"] == "skipped":
        out.print(f"skipped: {outcome['reason']} (use --force to train anyway)")
        return
    verdict = "promoted to active" if outcome["promoted"] else "rejected by the gate"
    out.print(
        _figures_table(f"{outcome['version']} on the evaluation folder", outcome["evaluation"])
    )
    if outcome.get("shifted"):
        out.print(_shifted_table(f"{outcome['version']} on its shifted copy", outcome["shifted"]))
    thresholds = outcome.get("thresholds") or {}
    if thresholds:
        out.print(
            "threshold " + ", ".join(f"{name} {_fmt(value)}" for name, value in thresholds.items())
        )
    calibration = outcome.get("calibration") or {}
    if calibration.get("temperature") is not None:
        before, after = calibration["ece_before"], calibration["ece_after"]
        out.print(
            f"temperature {_fmt(calibration['temperature'])}: ECE on the evaluation folder "
            f"{_fmt(before['evaluation'])} -> {_fmt(after['evaluation'])}, on the shifted "
            f"copy {_fmt(before['shifted'])} -> {_fmt(after['shifted'])}"
        )
    out.print(f"{outcome['version']}: {verdict}")
    for reason in outcome["gate"]["reasons"]:
        out.print(f"  - {reason}")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in outcome["timings_s"].items())
    out.print(f"timings: {timings}; features {outcome['features']}")


@contextmanager
def _progress(console: Console) -> Iterator[Any]:
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def evaluate(
    labelled_dir: Annotated[
        Path,
        typer.Argument(help="A folder with one sub-folder per class, e.g. NORMAL/ PNEUMONIA/."),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Model version; default the active one.")
    ] = None,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="table for people, json for scripts.")
    ] = ReportFormat.TABLE,
    report: Annotated[
        Path | None, typer.Option(help="Also write the ROC curve and confusion matrix to this PNG.")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Serve the model in this precision, as a worker with CXR_PRECISION does "
            "(float32, mixed_bfloat16, mixed_float16); default CXR_PRECISION."
        ),
    ] = None,
    shifted: Annotated[
        bool,
        typer.Option(
            "--shifted",
            help="Also measure it on a shifted copy of the folder: the same films as "
            "another site might send them (zoom in/out, gamma, low contrast, noise, JPEG "
            "q25, half resolution, burned-in markers), made deterministically and kept "
            "under CXR_MODEL_DIR; figures pooled and per change.",
        ),
    ] = False,
) -> None:
    """Measure a model on labelled images (accuracy, AUC, sensitivity, specificity ...).

    Val is a random carve of the training acquisitions and flatters a model; `--shifted`
    adds the figures on the same films under realistic site changes, at the same
    threshold: a model whose specificity falls there will fall at another site too.
    """
    settings = settings_or_fail()
    served = _precision(precision, settings.screening.precision)
    if not labelled_dir.is_dir():
        raise CommandError(f"{labelled_dir} is not a folder")
    # Imported here, after the cheap checks: TensorFlow takes seconds to load.
    from trainer.calibration import calibration_figures
    from trainer.data import scan_split
    from trainer.nightly import cache_root
    from trainer.registered import evaluate_ref, evaluate_shifted, find_ref
    from trainer.report import write_report
    from worker.decode_config import decode_options

    engine = engine_for(settings)
    try:
        with _friendly_errors(settings):
            ref = find_ref(make_session_factory(engine), model)
            split = scan_split(labelled_dir, classes=ref.classes)
            evaluation, scored = evaluate_ref(
                ref,
                split,
                cache_root=cache_root(settings),
                decode=decode_options(settings),
                precision=served,
                xla=settings.screening.xla,
            )
            moved = None
            if shifted:
                moved = evaluate_shifted(
                    ref,
                    split,
                    cache_root=cache_root(settings),
                    decode=decode_options(settings),
                    precision=served,
                    xla=settings.screening.xla,
                )
    finally:
        engine.dispose()
    figures = {
        "model_version": ref.version,
        "folder": str(labelled_dir),
        "inference_precision": served,
        "fell_back_to_float32": scored.fell_back,
        "skipped_files": [{"path": str(p), "reason": r} for p, r in scored.failed],
        **evaluation.to_dict(),
    }
    figures["calibration"] = calibration_figures(
        scored.probabilities,
        scored.split.label_indices(ref.classes),
        ref.classes.index(ref.positive_class),
    )
    if moved is not None:
        figures["shifted"] = moved.to_dict()
    if report is not None:
        served_calibration: dict[str, Any] = {"evaluation": figures["calibration"]}
        if moved is not None:
            served_calibration["shifted"] = moved.calibration
        write_report(
            report,
            evaluation=evaluation,
            title=f"{ref.version} ({served}) on {labelled_dir}",
            shifted=moved.pooled if moved is not None else None,
            calibration={"served": served_calibration},
        )
    if output_format is ReportFormat.JSON:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    out = Console()
    out.print(_figures_table(f"{ref.version} ({served}) on {labelled_dir}", figures))
    ece = figures["calibration"]["ece"]
    out.print(
        f"expected calibration error of the {ref.positive_class} probability (10 bins): {_fmt(ece)}"
    )
    if moved is not None:
        out.print(_shifted_table(f"{ref.version} on the shifted copy", figures["shifted"]))
    if scored.failed:
        out.print(f"{len(scored.failed)} files could not be decoded and were left out")
    if scored.fell_back:
        out.print(
            f"{scored.fell_back} images gave non-finite probabilities in {served} and were "
            "scored in float32 instead, as a worker would: this setting does not suit this "
            "model or device"
        )
    if report is not None:
        out.print(f"report written to {report}")


def _precision(option: str | None, default: Precision) -> Precision:
    """`--precision` checked against what the worker accepts; CXR_PRECISION when unset."""
    if option is None:
        return default
    by_name: dict[str, Precision] = {name: name for name in PRECISIONS}
    if option not in by_name:
        raise typer.BadParameter(
            f"{option!r} is not one of {', '.join(PRECISIONS)}", param_hint="--precision"
        )
    return by_name[option]


MODEL_COLUMNS = (
    "version", "status", "backbone", "auc", "sensitivity", "specificity", "threshold",
    "created_at", "promoted_at", "data_fingerprint", "artifact_path", "notes",
)  # fmt: skip
MODEL_TABLE_COLUMNS = MODEL_COLUMNS[:9]


@models_app.command("list")
def list_models(
    limit: Annotated[
        int, typer.Option(min=0, help="At most this many, newest first; 0: all.")
    ] = 20,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, csv or jsonl.")
    ] = OutputFormat.TABLE,
) -> None:
    """List model versions, newest first, with their status and figures."""
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        with _friendly_errors(settings), session_scope(make_session_factory(engine)) as session:
            rows = [
                {
                    "version": m.version,
                    "status": m.status.value,
                    "backbone": m.backbone,
                    "auc": m.metrics.get("auc"),
                    "sensitivity": m.metrics.get("sensitivity"),
                    "specificity": m.metrics.get("specificity"),
                    "threshold": m.threshold,
                    "created_at": m.created_at.isoformat(),
                    "promoted_at": m.promoted_at.isoformat() if m.promoted_at else None,
                    "data_fingerprint": m.data_fingerprint,
                    "artifact_path": m.artifact_path,
                    "notes": m.notes,
                }
                for m in model_registry.list_models(session, limit=limit or None)
            ]
    finally:
        engine.dispose()
    write_rows(
        rows,
        columns=MODEL_COLUMNS,
        table_columns=MODEL_TABLE_COLUMNS,
        output_format=output_format,
        title="model versions",
    )


@models_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="The version to put in service.")],
    force: Annotated[
        bool, typer.Option("--force", help="Skip the gate (not worse than the active model).")
    ] = False,
) -> None:
    """Make VERSION the active model if it is not worse than the active one on CXR_DATA_DIR."""
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        with _friendly_errors(settings):
            decision = promote_through_gate(
                settings, make_session_factory(engine), version=version, force=force
            )
    finally:
        engine.dispose()
    out = Console()
    out.print(f"{version} is now the active model")
    if decision is not None:
        for reason in decision.reasons:
            out.print(f"  - {reason}")


@models_app.command("rollback")
def rollback() -> None:
    """Reactivate the previously active model; the current one is marked rejected."""
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        with _friendly_errors(settings):
            old, new = roll_back(make_session_factory(engine))
    finally:
        engine.dispose()
    Console().print(f"rolled back {old}; {new} is active again")


@models_app.command("install-bundled")
def install_bundled() -> None:
    """Put the bundled default model in service when no model is active, as `up` does.

    It needs the VGG16 ImageNet base weights (CXR_BASE_WEIGHTS: `imagenet` downloads
    them, or a local `.weights.h5` file). Exit status 1 when it cannot.
    """
    from trainer.bundled import install_bundled as install  # loads TensorFlow: import late

    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        with _friendly_errors(settings):
            outcome = install(settings, make_session_factory(engine))
    finally:
        engine.dispose()
    if not outcome.installed:
        typer.secho(printable(outcome.message), fg="yellow", err=True)
        raise typer.Exit(1)
    Console().print(inert(outcome.message))


@models_app.command("build-bundled")
def build_bundled(
    data_dir: Annotated[
        Path, typer.Argument(help="Labelled folders: train/<CLASS>/ and val/<CLASS>/.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="The bundle folder; default the package's trainer/bundled_model."),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep the trained version folder here (default: a temporary one)."),
    ] = None,
) -> None:
    """Train the default recipe on DATA_DIR and write it as the bundled default model.

    How the packaged bundle is made (on the Kermany training data, with CXR_BASE_WEIGHTS
    set to the VGG16 ImageNet "notop" weights). Features are cached where `cxr-screen
    train` caches them (under CXR_MODEL_DIR), so a rerun costs only the head.
    """
    settings = settings_or_fail()
    if not data_dir.is_dir():
        raise CommandError(f"{data_dir} is not a folder")
    from trainer.bundle_build import build_bundle  # loads TensorFlow: import late
    from trainer.bundled import BUNDLE_DIR
    from trainer.nightly import cache_root
    from trainer.train import TrainConfig
    from worker.decode_config import decode_options

    err = Console(stderr=True)
    with _friendly_errors(settings), _progress(err) as progress:
        built = build_bundle(
            data_dir,
            config=TrainConfig.from_settings(settings),
            cache_root=cache_root(settings),
            decode=decode_options(settings, create_key=False),
            out_dir=out or BUNDLE_DIR,
            work_dir=keep,
            progress=progress,
        )
    card = built.card
    evaluation, shifted = card["evaluation"], card.get("shifted_evaluation") or {}
    Console().print(
        inert(
            f"{card['bundle']['version']} written to {built.directory} (from "
            f"{built.trained_version}): val AUC {_fmt(evaluation['auc'])}, sensitivity "
            f"{_fmt(evaluation['sensitivity'])}, specificity {_fmt(evaluation['specificity'])}"
            f" at {_fmt(card['model']['threshold'])}; shifted copy AUC "
            f"{_fmt(shifted.get('auc'))}, specificity {_fmt(shifted.get('specificity'))}"
        )
    )
