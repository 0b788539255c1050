"""Labelled folders (``train/<CLASS>/...``, ``val/`` or ``test/``) as hashed image lists."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trainer.errors import DataError
from worker.imaging.errors import ScreeningError, UnreadableScan
from worker.pipeline import ModelInput, Prepared, file_sha256, prepare_file

logger = logging.getLogger(__name__)

# DICOM files from a PACS export often have no suffix at all; anything else is not ours.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".dcm", ".dicom", ""})
EVALUATION_SPLITS = ("val", "test")


@dataclass(frozen=True, slots=True)
class LabelledImage:
    """One image file, its class (the folder it sits in) and its content hash."""

    path: Path
    label: str
    sha256: str


@dataclass(frozen=True, slots=True)
class LabelledSplit:
    """The images of one folder such as ``train/``, in a stable order."""

    name: str
    root: Path
    classes: tuple[str, ...]
    images: tuple[LabelledImage, ...]
    # Byte-identical files used once, and files left out for sitting under two classes.
    duplicates: int = 0
    conflicting: int = 0

    def counts(self) -> dict[str, int]:
        """Images per class, every class listed."""
        found = Counter(image.label for image in self.images)
        return {name: found.get(name, 0) for name in self.classes}

    def label_indices(self, classes: Sequence[str]) -> npt.NDArray[np.int64]:
        """Each image's class as an index into `classes`."""
        index = {name: i for i, name in enumerate(classes)}
        return np.asarray([index[image.label] for image in self.images], dtype=np.int64)

    def without(self, bad: Iterable[Path]) -> LabelledSplit:
        """The split less the images at the given paths (files that did not decode)."""
        drop = set(bad)
        kept = tuple(image for image in self.images if image.path not in drop)
        return dataclasses.replace(self, images=kept)


@dataclass(frozen=True, slots=True)
class LabelledDataset:
    """A training folder and the held-out folder it is evaluated on."""

    root: Path
    train: LabelledSplit
    evaluation: LabelledSplit
    # Evaluation images whose bytes are also in train/, left out of the evaluation.
    overlap: int = 0

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names: the sub-folders of ``train/``, sorted."""
        return self.train.classes

    def fingerprint(self) -> str:
        """A hash of what training would see; equal fingerprints mean nothing changed."""
        return data_fingerprint((self.train, self.evaluation))

    def duplicate_handling(self) -> dict[str, object]:
        """How exact duplicates were handled, for the model card."""
        return {
            "rule": "byte-identical files (same SHA-256) are used once; a file under two "
            "classes is left out; evaluation files whose bytes are in train/ are left out "
            "of the evaluation",
            "train_duplicates": self.train.duplicates,
            "evaluation_duplicates": self.evaluation.duplicates,
            "under_two_classes": self.train.conflicting + self.evaluation.conflicting,
            "evaluation_also_in_train": self.overlap,
        }


def list_classes(root: Path) -> tuple[str, ...]:
    """The sorted names of the class sub-folders of `root` (hidden folders ignored)."""
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder; a labelled folder holds one sub-folder per class, "
            "e.g. NORMAL/ and PNEUMONIA/"
        )
    return tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )


def _image_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
    return files


def scan_split(
    root: Path, *, name: str | None = None, classes: Sequence[str] | None = None
) -> LabelledSplit:
    """Hash every image under ``root/<CLASS>/`` (sub-folders included).

    Args:
        root: The folder holding one sub-folder per class.
        name: The split's name in fingerprints and logs (default: the folder's name).
        classes: The classes a model knows. Sub-folders outside them are an error; ones
            missing here are allowed (a site may only have some classes).

    Raises:
        DataError: the folder is missing, has no classes or no images, or holds a class
            that `classes` does not list.
    """
    found = list_classes(root)
    if not found:
        raise DataError(f"{root} has no class sub-folders (such as NORMAL/ and PNEUMONIA/)")
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"{root} has class folders {unknown} that the model does not know "
                f"(it knows {list(classes)}); rename or remove them"
            )
        split_classes = tuple(classes)
    else:
        split_classes = found
    seen: dict[str, LabelledImage] = {}
    conflicting: set[str] = set()
    duplicates = 0
    images: list[LabelledImage] = []
    for label in found:
        for path in _image_files(root / label):
            digest = file_sha256(path)
            earlier = seen.get(digest)
            if earlier is not None:
                if earlier.label != label:
                    conflicting.add(digest)
                # An exact copy adds no information and would count twice.
                logger.warning("%s duplicates %s; using it once", path, earlier.path)
                duplicates += 1
                continue
            image = LabelledImage(path=path, label=label, sha256=digest)
            seen[digest] = image
            images.append(image)
    if conflicting:
        logger.warning(
            "%d images in %s appear under two classes; they are left out", len(conflicting), root
        )
        images = [image for image in images if image.sha256 not in conflicting]
    if not images:
        raise DataError(f"{root} holds no JPEG, PNG or DICOM images under its class folders")
    return LabelledSplit(
        name=name or root.name,
        root=root,
        classes=split_classes,
        images=tuple(images),
        duplicates=duplicates,
        conflicting=len(conflicting),
    )


def load_dataset(data_dir: Path) -> LabelledDataset:
    """``data_dir/train`` and its evaluation folder (``val/``, else ``test/``).

    Raises:
        DataError: a folder is missing, a class has no training images, or the
            evaluation folder has a class that training does not.
    """
    train_root = data_dir / "train"
    if not train_root.is_dir():
        raise DataError(
            f"{data_dir} has no train/ folder; lay labelled data out as "
            "train/<CLASS>/*.jpeg plus val/<CLASS>/ (or test/<CLASS>/) for evaluation"
        )
    eval_root = next((data_dir / n for n in EVALUATION_SPLITS if (data_dir / n).is_dir()), None)
    if eval_root is None:
        raise DataError(
            f"{data_dir} has no val/ or test/ folder; a model is only registered after it "
            "is evaluated on held-out images"
        )
    train = scan_split(train_root, name="train")
    if len(train.classes) < 2:
        raise DataError(f"{train_root} needs at least two class folders, found {train.classes}")
    empty = [name for name, count in train.counts().items() if count == 0]
    if empty:
        raise DataError(f"{train_root} has no images for classes {empty}")
    evaluation = scan_split(eval_root, classes=train.classes)
    overlap = {i.sha256 for i in train.images} & {i.sha256 for i in evaluation.images}
    if overlap:
        # Same bytes in both: the evaluation would flatter the model.
        logger.warning(
            "%d images of %s are also in %s; they are left out of the evaluation",
            len(overlap),
            eval_root,
            train_root,
        )
        evaluation = dataclasses.replace(
            evaluation,
            images=tuple(i for i in evaluation.images if i.sha256 not in overlap),
        )
    return LabelledDataset(root=data_dir, train=train, evaluation=evaluation, overlap=len(overlap))


def data_fingerprint(splits: Iterable[LabelledSplit]) -> str:
    """SHA-256 of the sorted (split, class, content hash) triples: file names and dates
    do not count, content and labels do."""
    lines = sorted(
        f"{split.name}\t{image.label}\t{image.sha256}" for split in splits for image in split.images
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedImages:
    """Labelled images decoded into model input, and the ones that would not decode."""

    images: tuple[LabelledImage, ...]
    pixels: npt.NDArray[np.uint8]  # (len(images), size, size, 3)
    failed: tuple[tuple[Path, str], ...]


def prepare_images(images: Sequence[LabelledImage], model_input: ModelInput) -> PreparedImages:
    """The model input of each image through the serving pipeline's prepare stage.

    A file that does not decode, or whose bytes are no longer the ones hashed when the
    folder was listed, is left out and reported: one broken file in a folder of
    thousands must not stop a nightly run, and features are cached under the listed
    hash, so they must be of those very bytes.

    Raises:
        TransientError: an I/O error reading a file.
    """
    kept: list[LabelledImage] = []
    pixels: list[npt.NDArray[np.uint8]] = []
    failed: list[tuple[Path, str]] = []
    for image in images:
        outcome: Prepared | ScreeningError = prepare_file(
            image.path, model_input, follow_symlinks=True
        )
        if isinstance(outcome, Prepared) and outcome.sha256 != image.sha256:
            outcome = UnreadableScan(
                image.path,
                "changed after the folder was listed for this run",
                "leave labelled folders alone while training runs; the next run takes it",
            )
        if isinstance(outcome, ScreeningError):
            logger.warning("skipping %s: %s", image.path, outcome.message)
            failed.append((image.path, outcome.message))
            continue
        kept.append(image)
        pixels.append(outcome.image)
    size = model_input.size
    stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return PreparedImages(tuple(kept), stacked, tuple(failed))
