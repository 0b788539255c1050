"""Heatmaps of stored verdicts: Grad-CAM of a batch, a PNG beside each archived file.

Called after the batch's verdicts are committed, so a heatmap never delays or blocks a
result: whatever goes wrong here is recorded on the scan (`heatmap_status` failed, with
the reason) and the verdict stands. A scan whose worker died between its verdict and
its heatmap stays `pending`; the reconcile task asks for it again (`catch_up`), from the
archived file, with the model that made the verdict.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from db.heatmaps import owed_heatmaps, record_heatmaps
from db.session import session_scope
from worker.confined import HeldFile, read_held, write_bytes
from worker.filing import Filing, heatmap_path
from worker.imaging import DecodeOptions
from worker.imaging.errors import ScreeningError, brief
from worker.pipeline import Prepared, Verdict, prepare_bytes
from worker.pipeline.explain import Explainer
from worker.pipeline.heatmap_picture import caption, png_bytes, render
from worker.settings import HeatmapMode

if TYPE_CHECKING:
    from worker.inference import LoadedModel, ModelCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeatmapJob:
    """One verdict to explain: the scan, the model input it was made on, the verdict."""

    scan_id: int
    sha256: str
    received_at: datetime
    image: npt.NDArray[np.uint8]
    label: str
    probability: float
    threshold: float


def wanted(mode: HeatmapMode, verdict: Verdict, positive_class: str) -> bool:
    """Whether CXR_HEATMAPS asks for this verdict's heatmap."""
    if mode == "all":
        return True
    return mode == "flagged" and verdict.label == positive_class


class Heatmaps:
    """Makes heatmaps for one worker process; the explainer of the serving model, built once.

    Splitting the model for Grad-CAM builds two Keras models (a second for VGG16), so
    it is done on the first heatmap of each version, not per batch.
    """

    def __init__(self, mode: HeatmapMode) -> None:
        self.mode: HeatmapMode = mode
        self._explainers: dict[int, Explainer] = {}
        self._lock = threading.Lock()

    def explainer(self, model: LoadedModel) -> Explainer:
        """The explainer of `model` (its float32 artifact, whatever precision serves)."""
        with self._lock:
            if model.version_id not in self._explainers:
                predictor = model.predictor
                artifact = predictor.float32_model or predictor.keras_model
                # Only the serving version's: a replaced model's explainer is let go.
                self._explainers = {model.version_id: Explainer.of(artifact)}
            return self._explainers[model.version_id]

    def make(
        self,
        factory: sessionmaker[Session],
        filing: Filing,
        model: LoadedModel,
        jobs: list[HeatmapJob],
    ) -> tuple[dict[int, str], dict[int, str]]:
        """Explain `jobs` in one batch, keep each picture, record the outcome on the scans.

        Returns:
            (scan id -> PNG path made, scan id -> reason it failed).
        """
        made: dict[int, str] = {}
        failed: dict[int, str] = {}
        if not jobs:
            return made, failed
        try:
            explainer = self.explainer(model)
            index = model.point.classes.index(model.point.positive_class)
            cams = explainer.heatmaps(np.stack([job.image for job in jobs]), index)
        except Exception as exc:  # noqa: BLE001 - a heatmap never takes a result down
            reason = f"Grad-CAM failed on model {model.version}: {brief(exc)}"
            log.warning("heatmaps of scans %s: %s", [j.scan_id for j in jobs], reason)
            failed = {job.scan_id: reason for job in jobs}
        else:
            for job, cam in zip(jobs, cams, strict=True):
                outcome = _keep(filing, model, job, cam)
                (made if isinstance(outcome, Path) else failed)[job.scan_id] = str(outcome)
        with session_scope(factory) as session:
            record_heatmaps(session, made=made, failed=failed)
        return made, failed


def _keep(
    filing: Filing, model: LoadedModel, job: HeatmapJob, cam: npt.NDArray[np.float32]
) -> Path | str:
    """Render and write one heatmap beside the archived file; its path, or why not."""
    picture = render(
        job.image,
        cam,
        caption(
            label=job.label,
            probability=job.probability,
            threshold=job.threshold,
            model_version=model.version,
        ),
    )
    target = heatmap_path(filing.archive, sha256=job.sha256, received_at=job.received_at)
    try:
        return write_bytes(filing.archive, target, png_bytes(picture))
    except OSError as exc:
        reason = f"could not write {target}: {exc.strerror or brief(exc)}"
        log.warning("scan %d: heatmap %s", job.scan_id, reason)
        return reason


def catch_up(
    factory: sessionmaker[Session],
    filing: Filing,
    models: ModelCache,
    heatmaps: Heatmaps,
    options: DecodeOptions,
    scan_ids: list[int],
) -> tuple[dict[int, str], dict[int, str]]:
    """Make the heatmaps still owed among `scan_ids` from their archived files.

    Only with the model that made the verdict: a heatmap of another model's evidence
    would not explain the result, so such a scan's heatmap fails with that reason.
    """
    with session_scope(factory) as session:
        owed = owed_heatmaps(session, scan_ids=scan_ids)
    model = models.current()
    jobs: list[HeatmapJob] = []
    failed: dict[int, str] = {}
    for scan in owed:
        if model is None or model.version_id != scan.model_version_id:
            failed[scan.scan_id] = (
                "the model that made the verdict is no longer in service, so its heatmap "
                "cannot be made"
            )
            continue
        prepared = _reprepare(filing, model, options, scan.stored_path, scan.sha256)
        if isinstance(prepared, str):
            failed[scan.scan_id] = prepared
            continue
        jobs.append(
            HeatmapJob(
                scan.scan_id,
                scan.sha256,
                scan.received_at,
                prepared.image,
                scan.label,
                scan.probability,
                scan.threshold,
            )
        )
    if failed:
        with session_scope(factory) as session:
            record_heatmaps(session, made={}, failed=failed)
    if model is None or not jobs:
        return {}, failed
    made, also_failed = heatmaps.make(factory, filing, model, jobs)
    return made, {**failed, **also_failed}


def _reprepare(
    filing: Filing, model: LoadedModel, options: DecodeOptions, stored: str | None, sha256: str
) -> Prepared | str:
    """The model input of the archived file, if it is still the screened bytes."""
    path = Path(stored) if stored else None
    if path is None or filing.root_of(path) != filing.archive:
        return "the file is not in the archive, so its heatmap cannot be made"
    try:
        held = read_held(filing.archive, path, max_bytes=options.max_file_bytes)
    except OSError as exc:
        return f"the archived file could not be read ({exc.strerror or brief(exc)})"
    if not isinstance(held, HeldFile):
        return "the archived file is larger than CXR_MAX_FILE_MB now"
    if held.sha256 != sha256:
        return "the archived file is not the screened bytes any more"
    prepared = prepare_bytes(held, model.model_input(options))
    if isinstance(prepared, ScreeningError):
        return f"the archived file no longer decodes: {prepared.message}"
    return prepared
