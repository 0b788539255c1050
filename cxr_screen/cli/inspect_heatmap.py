"""`cxr-screen inspect --heatmap`: each accepted file's Grad-CAM picture with the active model.

The same picture the worker keeps beside an archived scan (model input, overlay, burned-in
caption), for a file that was never screened or to look at one again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import CommandError, database_error
from db.model_registry import get_active_model
from db.session import make_engine, make_session_factory
from worker.heatmaps import Heatmaps
from worker.imaging import DecodeOptions
from worker.inference import LoadedModel, load_model_version
from worker.pipeline import (
    ModelUnavailableError,
    Prepared,
    interpret,
    predict_prepared,
    prepare_file,
)
from worker.pipeline.heatmap_picture import caption, png_bytes, render
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class Explained:
    """A file's verdict with the active model and where its picture was written."""

    label: str
    probability: float
    picture: Path


class HeatmapWriter:
    """The active model, loaded once, writing one picture per accepted file."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.folder = folder
        self.model = _active_model(settings)
        self._heatmaps = Heatmaps("all")

    def write(self, path: Path, options: DecodeOptions, name: str) -> Explained | str:
        """Decode `path` for the model, explain its verdict, write `folder/name`."""
        prepared = prepare_file(path, self.model.model_input(options))
        if not isinstance(prepared, Prepared):
            return prepared.message
        model = self.model
        (verdict,) = interpret(
            predict_prepared(model.predictor, [prepared]), model.point, model.predictor
        )
        index = model.point.classes.index(model.point.positive_class)
        (cam,) = self._heatmaps.explainer(model).heatmaps(prepared.image[None], index)
        words = caption(
            label=verdict.label,
            probability=verdict.probability,
            threshold=model.threshold,
            model_version=model.version,
        )
        target = self.folder / name
        target.write_bytes(png_bytes(render(prepared.image, cam, words)))
        return Explained(verdict.label, verdict.probability, target)


def _active_model(settings: Settings) -> LoadedModel:
    engine = make_engine(settings.storage.database_url)
    try:
        with make_session_factory(engine)() as session:
            row = get_active_model(session)
            if row is None:
                raise CommandError(
                    "--heatmap needs an active model: train one with `cxr-screen train` "
                    "(or promote one with `cxr-screen models promote VERSION`)"
                )
            return load_model_version(row)
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    except ModelUnavailableError as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()
