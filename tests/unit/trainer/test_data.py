"""Labelled folders: classes, hashing, duplicates, evaluation folder and fingerprints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.unit.trainer.conftest import make_dataset, write_image
from trainer.data import load_dataset, prepare_images, scan_split
from trainer.errors import DataError
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput


def test_classes_are_the_sorted_sub_folders_of_train(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    assert dataset.classes == ("NORMAL", "PNEUMONIA")
    assert dataset.train.counts() == {"NORMAL": 10, "PNEUMONIA": 10}
    assert dataset.evaluation.name == "val"
    assert dataset.evaluation.counts() == {"NORMAL": 6, "PNEUMONIA": 6}


def test_test_folder_is_used_when_there_is_no_val(tiny_data: Path) -> None:
    (tiny_data / "val").rename(tiny_data / "test")
    assert load_dataset(tiny_data).evaluation.name == "test"


def test_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no train/ folder"):
        load_dataset(tmp_path)
    make_dataset(tmp_path, train=1, val=1)
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DataError, match="has no val/ or test/ folder"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        scan_split(tmp_path / "nope")


def test_an_evaluation_class_unknown_to_training_is_an_error(tiny_data: Path) -> None:
    write_image(tiny_data / "val" / "COVID" / "c.png", "PNEUMONIA", 99)
    with pytest.raises(DataError, match=r"class folders \['COVID'\] that the model does not know"):
        load_dataset(tiny_data)


def test_nested_folders_and_dicom_without_suffix_are_found_other_files_ignored(
    tmp_path: Path,
) -> None:
    write_image(tmp_path / "NORMAL" / "study1" / "a.png", "NORMAL", 1)
    (tmp_path / "PNEUMONIA").mkdir()
    shutil.copy(write_image(tmp_path / "x.png", "PNEUMONIA", 2), tmp_path / "PNEUMONIA" / "IM0001")
    (tmp_path / "PNEUMONIA" / "notes.txt").write_text("not an image")
    (tmp_path / "NORMAL" / ".hidden.png").write_bytes(b"")
    split = scan_split(tmp_path)
    assert [(i.label, i.path.name) for i in split.images] == [
        ("NORMAL", "a.png"),
        ("PNEUMONIA", "IM0001"),
    ]


def test_duplicates_count_once_and_conflicting_labels_are_dropped(tmp_path: Path) -> None:
    a = write_image(tmp_path / "NORMAL" / "a.png", "NORMAL", 1)
    shutil.copy(a, tmp_path / "NORMAL" / "a_copy.png")
    b = write_image(tmp_path / "PNEUMONIA" / "b.png", "PNEUMONIA", 2)
    shutil.copy(b, tmp_path / "NORMAL" / "b_as_normal.png")
    split = scan_split(tmp_path)
    assert sorted(i.path.name for i in split.images) == ["a.png"]


def test_images_in_both_train_and_val_are_left_out_of_the_evaluation(tiny_data: Path) -> None:
    shutil.copy(tiny_data / "train/NORMAL/normal_0.png", tiny_data / "val/NORMAL/leak.png")
    dataset = load_dataset(tiny_data)
    assert "leak.png" not in {i.path.name for i in dataset.evaluation.images}


def test_fingerprint_follows_content_and_labels_not_names_or_dates(tiny_data: Path) -> None:
    first = load_dataset(tiny_data).fingerprint()
    path = tiny_data / "train/NORMAL/normal_0.png"
    os.utime(path, (1, 1))
    path.rename(path.with_name("renamed.png"))
    assert load_dataset(tiny_data).fingerprint() == first
    # The same image under another label is a different dataset.
    path.with_name("renamed.png").rename(tiny_data / "train/PNEUMONIA/moved.png")
    moved = load_dataset(tiny_data).fingerprint()
    assert moved != first
    write_image(tiny_data / "train/NORMAL/new.png", "NORMAL", 500)
    assert load_dataset(tiny_data).fingerprint() not in (first, moved)


def test_images_are_decoded_by_the_workers_pipeline(tmp_path: Path) -> None:
    path = write_image(tmp_path / "NORMAL" / "a.png", "NORMAL", 1)
    bad = tmp_path / "NORMAL" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    split = scan_split(tmp_path)
    prepared = prepare_images(split.images, ModelInput.of(32, DecodeOptions()))
    assert prepared.pixels.shape == (1, 32, 32, 3)
    assert prepared.pixels.dtype.name == "uint8"
    assert [i.path for i in prepared.images] == [path]
    [(failed, reason)] = prepared.failed
    assert failed == bad
    assert reason.startswith("bad.png: ")


def test_an_image_rewritten_after_listing_is_left_out(tmp_path: Path) -> None:
    """Features are cached under the listed hash: they must be of those very bytes."""
    path = write_image(tmp_path / "NORMAL" / "a.png", "NORMAL", 1)
    split = scan_split(tmp_path)
    write_image(path, "NORMAL", 2)
    prepared = prepare_images(split.images, ModelInput.of(32, DecodeOptions()))
    assert prepared.images == ()
    assert "changed after the folder was listed" in prepared.failed[0][1]
