"""The bundled default model: a trained head (and, when the recipe fine-tunes, the base's
last block) shipped with the package, put in service on a first start so that scans are
screened before any site has labelled data.

Only what training changed travels: the head (a few hundred kB) and the fine-tuned last
block (`trainer.bundled_block`, 14 MB in float16 for VGG16). The backbone's ImageNet
weights are licensed and sized separately, so they come from where training gets them
(`CXR_BASE_WEIGHTS`). The bundle's card records the weight tensors' hash, and the base is
refused unless its tensors hash the same: a head on other features would answer, and
answer wrongly.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.session import session_scope
from trainer.artifacts import ARTIFACT_NAME, CARD_NAME, REPORT_NAME
from trainer.backbones import build_base, get_backbone, parse_base_weights, weights_sha256
from trainer.bundled_block import (
    TUNED_FILE,
    BlockWeights,
    apply_block,
    block_weights,
    choose_precision,
    load_block,
    save_block,
)
from trainer.errors import RegistryError, TrainerError, WeightsError
from trainer.model import BASE_LAYER_NAME, HEAD_NAME, PREPROCESS_NAME, assemble
from trainer.preprocessing import preprocessing_layer
from worker.pipeline import file_sha256
from worker.pipeline.backbones import BackboneSpec, BaseWeights
from worker.settings import Settings

logger = logging.getLogger(__name__)

BUNDLE_DIR = Path(__file__).parent / "bundled_model"
HEAD_FILE = "head.keras"
VERSION_PREFIX = "bundled-"
DATA_ATTRIBUTION = (
    "Kermany, Zhang, Goldbaum (2018), Labeled Optical Coherence Tomography (OCT) and Chest "
    "X-Ray Images for Classification, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0"
)
NOT_FOR_CLINICAL_USE = (
    "Not for clinical use: a research default trained on one hospital's paediatric films "
    "(Guangzhou, ages 1-5). It screens at once on a first start and is replaced, through "
    "the gate, by the first model trained on the site's own labelled data that passes."
)
REGISTRY_NOTES = (
    "bundled default model: trained on the Kermany 2018 training data (CC BY 4.0), "
    "not for clinical use"
)
IN_SERVICE = (
    "No model is active: putting the bundled default model {version} in service (trained "
    "on the Kermany 2018 training data; not for clinical use)."
)
NO_MODEL = "no model in service: "
# The exported model and the installed one compute the same graph; a GPU's TF32
# convolutions (the export may run on one) move a probability by well under this.
CHECK_TOLERANCE = 0.02
# The assembled model against its own parts, on the same device: only float noise.
PARTS_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    """What `install_bundled` did.

    Attributes:
        installed: The bundled model is now the active model.
        version: The bundled version put in service, or the active model that made the
            bundle unnecessary; None when nothing could be put in service.
        message: One line for people: what happened, or what to set.
    """

    installed: bool
    version: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle folder read and checked: the head's file, the fine-tuned block's file (None
    for a head-only bundle) and the card that describes them."""

    directory: Path
    head: Path
    card: dict[str, Any]
    tuned: Path | None = None

    @property
    def version(self) -> str:
        """The registry name every installation of this bundle gets."""
        return str(self.card["bundle"]["version"])

    @property
    def spec(self) -> BackboneSpec:
        """The backbone the head was trained on."""
        return get_backbone(str(self.card["model"]["backbone"]))

    @property
    def size(self) -> int:
        """The model's input side in pixels."""
        return int(self.card["model"]["input"]["shape"][0])

    @property
    def base_sha256(self) -> str:
        """The hash of the base weight tensors the head was trained on."""
        return str(self.card["base_weights"]["tensors_sha256"])


# --- export ---------------------------------------------------------------------------


def export_bundle(
    version_dir: Path,
    out_dir: Path,
    *,
    command: str,
    today: date | None = None,
    compare_on: npt.NDArray[np.uint8] | None = None,
) -> dict[str, Any]:
    """Write ``head.keras``, ``model_card.json``, ``report.png`` (and, for a fine-tuned
    model, ``tuned_block.npz``) of a trained version.

    Args:
        version_dir: A folder written by `trainer.artifacts.save_trained`.
        out_dir: The bundle folder (`BUNDLE_DIR` for the package); its files are
            replaced together, and a tuned block left by an earlier export is removed.
        command: How the version was trained, recorded so anyone can reproduce it.
        today: The export date in the version name; default today (UTC).
        compare_on: Model inputs (N x side x side x 3) on which a fine-tuned block's
            float16 copy must answer as the trained model does (beside the check image);
            float32 is stored otherwise.

    Returns:
        The bundle's card.

    Raises:
        RegistryError: the folder is incomplete, its model is not the one its card
            describes, or its base was changed though the recipe did not fine-tune.
    """
    card = _read_json(version_dir / CARD_NAME)
    artifact = version_dir / ARTIFACT_NAME
    model = _load_trained(artifact, card)
    head = model.get_layer(HEAD_NAME)
    size = int(card["model"]["input"]["shape"][0])
    tuned = _tuned_block(model, card, size=size, compare_on=compare_on)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir))
    try:
        head.save(staging / HEAD_FILE)
        head_sha = file_sha256(staging / HEAD_FILE)
        names = [HEAD_FILE, CARD_NAME, REPORT_NAME]
        day = today or datetime.now(UTC).date()
        card["bundle"] = {
            "version": f"{VERSION_PREFIX}{day:%Y%m%d}-{head_sha[:8]}",
            "head_sha256": head_sha,
            "trained_by": command,
            "data": DATA_ATTRIBUTION,
            "not_for_clinical_use": NOT_FOR_CLINICAL_USE,
            "exported_from": card["version"],
            "check": {
                "input": f"trainer.bundled.check_input({size})",
                "probabilities": _probabilities(model, check_input(size)),
            },
        }
        if tuned is not None:
            weights, described = tuned
            save_block(staging / TUNED_FILE, weights)
            card["bundle"]["tuned_block"] = {
                **described,
                "file": TUNED_FILE,
                "sha256": file_sha256(staging / TUNED_FILE),
            }
            names.append(TUNED_FILE)
        _write_json(staging / CARD_NAME, card)
        shutil.copyfile(version_dir / REPORT_NAME, staging / REPORT_NAME)
        for name in names:
            (staging / name).replace(out_dir / name)
        if tuned is None:
            (out_dir / TUNED_FILE).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("bundled %s as %s in %s", card["version"], card["bundle"]["version"], out_dir)
    return card


def _load_trained(artifact: Path, card: dict[str, Any]) -> keras.Model:
    """The version's model, checked to be the one its card describes."""
    if not artifact.is_file():
        raise RegistryError(f"{artifact} is absent: give a folder written by a training run")
    actual = file_sha256(artifact)
    if actual != card["artifact"]["sha256"]:
        raise RegistryError(
            f"{artifact} has sha256 {actual}, its card says {card['artifact']['sha256']}: "
            "the card does not describe this model"
        )
    return keras.models.load_model(artifact, compile=False)


def _tuned_block(
    model: keras.Model,
    card: dict[str, Any],
    *,
    size: int,
    compare_on: npt.NDArray[np.uint8] | None,
) -> tuple[BlockWeights, dict[str, Any]] | None:
    """The fine-tuned last block to ship, in the precision chosen for it (and left in
    `model`, so the check probabilities are those of what installs); None when the base
    is still the ImageNet one.

    Raises:
        RegistryError: the base changed, but the recipe says it was not fine-tuned.
    """
    base = model.get_layer(BASE_LAYER_NAME)
    base_sha = weights_sha256(base)
    if base_sha == card["base_weights"]["tensors_sha256"]:
        return None
    if not card.get("training", {}).get("fine_tune"):
        raise RegistryError(
            f"the base of {card['version']} hashes {base_sha}, not the base weights it was "
            f"trained from ({card['base_weights']['tensors_sha256']}), though its recipe did "
            "not fine-tune: the model was changed after training; train it again"
        )
    spec = get_backbone(str(card["model"]["backbone"]))
    positive = list(card["model"]["classes"]).index(card["model"]["positive_class"])
    images = check_input(size)
    if compare_on is not None and len(compare_on):
        images = np.concatenate([images, compare_on.astype(np.float32)])

    def score(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(model.predict(x, batch_size=16, verbose=0))[:, positive]

    weights, precision = choose_precision(
        score,
        lambda chosen: apply_block(base, chosen, spec),
        block_weights(base, spec),
        images,
        threshold=float(card["model"]["threshold"]),
    )
    described = {
        "layers": sorted(weights),
        "parameters": int(sum(v.size for values in weights.values() for v in values)),
        "precision": precision.to_dict(),
        "lower_blocks": "the ImageNet base of CXR_BASE_WEIGHTS, checked by base_weights."
        "tensors_sha256",
    }
    return weights, described


# --- install --------------------------------------------------------------------------


def install_bundled(settings: Settings, factory: sessionmaker[Session]) -> InstallOutcome:
    """Put the bundled default model in service when no model is active.

    With an active model it does nothing. A bundled version registered before is made
    active again; otherwise the model is assembled from the bundle's head and the base
    weights of `CXR_BASE_WEIGHTS`, saved under `CXR_MODEL_DIR`, registered and made
    active. What cannot be done (no bundle, no usable weights) is returned as a message,
    never raised: the service starts without a model and scans wait in the queue.
    """
    with session_scope(factory) as session:
        active = model_registry.get_active_model(session)
        if active is not None:
            return _not_needed(active.version)
    try:
        bundle = read_bundle(settings.training.bundled_model_dir or BUNDLE_DIR)
        with session_scope(factory) as session:
            if model_registry.get_model(session, version=bundle.version) is not None:
                return _reactivate(session, bundle)
        directory = settings.storage.model_dir / bundle.version
        if not _holds_installed(directory, bundle):
            _build_version(bundle, directory, weights_setting=settings.training.base_weights)
        return _register(factory, bundle, directory)
    except TrainerError as exc:
        # One line whatever Keras or h5py put in their messages: it ends up in a log line.
        message = NO_MODEL + " ".join(str(exc).split())
        logger.info("%s", message)  # the caller shows it: `up` as a warning
        return InstallOutcome(installed=False, version=None, message=message)


def read_bundle(directory: Path) -> Bundle:
    """The bundle in `directory`, its head checked against the card's hash.

    Raises:
        RegistryError: the bundle is absent (a checkout before it was built) or damaged.
    """
    head = directory / HEAD_FILE
    if not head.is_file():
        raise RegistryError(
            f"the bundled default model is not installed ({head} is absent; a developer "
            "checkout has it only after `cxr-screen models build-bundled` wrote it): train "
            "a model with CXR_DATA_DIR set instead"
        )
    card = _read_json(directory / CARD_NAME)
    bundle = card.get("bundle")
    if not isinstance(bundle, dict) or not str(bundle.get("version", "")).startswith(
        VERSION_PREFIX
    ):
        raise RegistryError(
            f"{directory / CARD_NAME} has no 'bundle' section: export the bundle again"
        )
    actual = file_sha256(head)
    if actual != bundle.get("head_sha256"):
        raise RegistryError(
            f"{head} has sha256 {actual}, the bundle's card says {bundle.get('head_sha256')}: "
            "the bundle is damaged; reinstall the package or export the bundle again"
        )
    checked = Bundle(
        directory=directory, head=head, card=card, tuned=_tuned_file(directory, bundle)
    )
    _check_card(checked)
    return checked


def _tuned_file(directory: Path, bundle: dict[str, Any]) -> Path | None:
    """The fine-tuned block's file named by the card, checked against its hash."""
    described = bundle.get("tuned_block")
    if described is None:
        return None
    path = directory / TUNED_FILE
    if not path.is_file():
        raise RegistryError(
            f"{path} is absent, though the bundle's card names a fine-tuned block: the bundle "
            "is damaged; reinstall the package or export the bundle again"
        )
    actual = file_sha256(path)
    if not isinstance(described, dict) or actual != described.get("sha256"):
        expected = described.get("sha256") if isinstance(described, dict) else None
        raise RegistryError(
            f"{path} has sha256 {actual}, the bundle's card says {expected}: the bundle is "
            "damaged; reinstall the package or export the bundle again"
        )
    return path


def _check_card(bundle: Bundle) -> None:
    """Every field installing reads, read once now: a bad card fails here, by name."""
    try:
        _ = (bundle.spec, bundle.size, bundle.base_sha256, bundle.card["artifact"]["sha256"])
        model = bundle.card["model"]
        _ = (list(model["classes"]), str(model["positive_class"]), float(model["threshold"]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RegistryError(
            f"{bundle.directory / CARD_NAME} lacks a field ({exc!r}): export the bundle again"
        ) from None


def _not_needed(active: str) -> InstallOutcome:
    return InstallOutcome(
        installed=False,
        version=active,
        message=f"{active} is the active model; the bundled default model goes in service "
        "only when no model is (change the active model with `cxr-screen models promote`)",
    )


def _reactivate(session: Session, bundle: Bundle) -> InstallOutcome:
    """Make the registered bundled version active again, if its artifact is still there."""
    row = model_registry.require_model(session, version=bundle.version)
    if not Path(row.artifact_path).is_file():
        raise RegistryError(
            f"{bundle.version} is registered but its artifact {row.artifact_path} is absent: "
            "restore it, or train a model with CXR_DATA_DIR set"
        )
    model_registry.set_active(session, version=bundle.version, notes=_activation_note())
    logger.info("%s (bundled, registered before) is active again", bundle.version)
    return InstallOutcome(True, bundle.version, IN_SERVICE.format(version=bundle.version))


def _holds_installed(directory: Path, bundle: Bundle) -> bool:
    """Whether `directory` already holds this bundle, installed before (the registry was
    reset since, say). An empty folder is removed; one with anything else in it is
    refused, never overwritten."""
    if not directory.exists():
        return False
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        return False
    if not _is_install_of(directory, bundle):
        raise RegistryError(
            f"{directory} exists and does not hold the bundled model {bundle.version}; "
            "model folders are never overwritten: move it away and start again"
        )
    return True


def _is_install_of(directory: Path, bundle: Bundle) -> bool:
    """A folder `_build_version` wrote from this bundle: its card names the same head, and
    its model is the one that card describes."""
    try:
        card = _read_json(directory / CARD_NAME)
        installed = card.get("bundle", {})
        wanted = bundle.card["bundle"]
        same_parts = bool(
            installed.get("head_sha256") == wanted["head_sha256"]
            and installed.get("tuned_block") == wanted.get("tuned_block")
        )
        artifact = card.get("artifact", {}).get("sha256")
        return same_parts and artifact == file_sha256(directory / ARTIFACT_NAME)
    except (RegistryError, OSError, AttributeError):
        return False


def _build_version(bundle: Bundle, directory: Path, *, weights_setting: str) -> None:
    """Assemble the model on the site's base weights (its last block replaced by the
    bundle's fine-tuned one, if any) and write the version's folder."""
    base = _verified_base(bundle, weights_setting)
    if bundle.tuned is not None:
        apply_block(base, load_block(bundle.tuned), bundle.spec)
    head = keras.models.load_model(bundle.head, compile=False)
    preprocessing = preprocessing_layer(bundle.spec.preprocessing, name=PREPROCESS_NAME)
    model = assemble(base=base, head=head, size=bundle.size, preprocessing=preprocessing)
    _check_assembly(model, bundle, base=base, head=head, preprocessing=preprocessing)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.version}.", dir=directory.parent))
    try:
        model.save(staging / ARTIFACT_NAME)
        card = copy.deepcopy(bundle.card)
        card["version"] = bundle.version
        card["artifact"]["sha256"] = file_sha256(staging / ARTIFACT_NAME)
        card["bundle"]["installed"] = {
            "at": datetime.now(UTC).isoformat(),
            "base_weights": weights_setting,
        }
        _write_json(staging / CARD_NAME, card)
        if (bundle.directory / REPORT_NAME).is_file():
            shutil.copyfile(bundle.directory / REPORT_NAME, staging / REPORT_NAME)
        # A rename: the version folder appears whole or not at all, and never replaces one.
        staging.rename(directory)
    except OSError as exc:
        raise RegistryError(f"cannot write {directory}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("bundled model %s written to %s", bundle.version, directory)


def _verified_base(bundle: Bundle, weights_setting: str) -> keras.Model:
    """The backbone base on the configured weights, refused unless they are the bundle's."""
    spec = bundle.spec
    needs = (
        f"the bundled model needs the {spec.application} ImageNet base weights; set "
        f"CXR_BASE_WEIGHTS to a {spec.name} 'notop' .weights.h5 file"
    )
    try:
        weights = parse_base_weights(weights_setting)
    except WeightsError as exc:
        raise WeightsError(f"{needs} ({exc})") from None
    if weights is None:
        raise WeightsError(f"{needs} (CXR_BASE_WEIGHTS is 'none')")
    try:
        base = build_base(spec, size=bundle.size, weights=weights, name=BASE_LAYER_NAME)
    except WeightsError as exc:
        # The cause is Keras's own words; build_base's advice is what `needs` says.
        failed = "Keras's download failed" if weights == "imagenet" else f"{weights} does not load"
        raise WeightsError(f"{needs} ({failed}: {exc.__cause__ or exc})") from None
    actual = weights_sha256(base)
    if actual != bundle.base_sha256:
        raise WeightsError(
            f"{needs} (the weights from {_source(weights)} have tensors sha256 {actual}; "
            f"{bundle.version} was trained on tensors sha256 {bundle.base_sha256})"
        )
    return base


def _source(weights: BaseWeights) -> str:
    return "Keras's download" if weights == "imagenet" else str(weights)


def _check_assembly(
    model: keras.Model,
    bundle: Bundle,
    *,
    base: keras.Model,
    head: keras.Model,
    preprocessing: keras.layers.Layer,
) -> None:
    """One synthetic image through the assembled model, its parts, and the exported model.

    Cheap next to building the base, and it catches what a hash cannot: a wiring
    mistake, or preprocessing that no longer computes what the head was trained behind.
    """
    image = check_input(bundle.size)
    whole = np.asarray(_probabilities(model, image))
    features = base(preprocessing(image), training=False)
    parts = keras.ops.convert_to_numpy(head(features, training=False))[0]
    if not np.allclose(whole, parts, atol=PARTS_TOLERANCE):
        raise RegistryError(
            f"the assembled bundled model answers {whole.tolist()} where its parts answer "
            f"{parts.tolist()}: report this as a bug"
        )
    expected = bundle.card["bundle"].get("check", {}).get("probabilities")
    if expected is not None and not np.allclose(whole, expected, atol=CHECK_TOLERANCE):
        raise RegistryError(
            f"the bundled model {bundle.version} answers {whole.tolist()} on its check image "
            f"where the exported model answered {expected}: this package's preprocessing "
            "or backbone differs from the one it was trained with; export the bundle again"
        )


def check_input(size: int) -> npt.NDArray[np.float32]:
    """A fixed synthetic RGB image (diagonal gradients, one per channel), batch of one."""
    ramp = np.add.outer(np.arange(size), np.arange(size)) / max(2 * (size - 1), 1)
    channels = [ramp, ramp[::-1], ramp[:, ::-1]]
    return (np.stack(channels, axis=-1)[None] * 255.0).astype(np.float32)


def _probabilities(model: keras.Model, image: npt.NDArray[np.float32]) -> list[float]:
    return [float(p) for p in keras.ops.convert_to_numpy(model(image, training=False))[0]]


def _register(factory: sessionmaker[Session], bundle: Bundle, directory: Path) -> InstallOutcome:
    """Add the bundled version's row and make it active, unless a model became active."""
    card = _read_json(directory / CARD_NAME)
    model = card["model"]
    with session_scope(factory) as session:
        active = model_registry.get_active_model(session)
        if active is not None:  # another process put one in service meanwhile
            return _not_needed(active.version)
        model_registry.add_candidate(
            session,
            version=bundle.version,
            artifact_path=str((directory / ARTIFACT_NAME).resolve()),
            checksum=card["artifact"]["sha256"],
            backbone=model["backbone"],
            classes=list(model["classes"]),
            positive_class=model["positive_class"],
            input_size=int(model["input"]["shape"][0]),
            threshold=float(model["threshold"]),
            base_weights_sha256=bundle.base_sha256,
            data_fingerprint=card.get("data", {}).get("fingerprint"),
            metrics={**card.get("evaluation", {}), "evaluated_on": _evaluated_on(card)},
            notes=REGISTRY_NOTES,
        )
        model_registry.set_active(session, version=bundle.version, notes=_activation_note())
    logger.info("bundled model %s registered and active", bundle.version)
    return InstallOutcome(True, bundle.version, IN_SERVICE.format(version=bundle.version))


def _evaluated_on(card: dict[str, Any]) -> str:
    root = card.get("data", {}).get("root", "?")
    return f"held-out images of {root} when {card['bundle'].get('exported_from')} was trained"


def _activation_note() -> str:
    return "put in service as the bundled default model: no model was active"


# --- files ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path} is absent") from None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path} does not hold a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
