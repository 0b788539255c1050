"""Decoding JPEG and PNG radiographs: grey, colour, 16-bit, EXIF, draft mode, caps, damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.worker.imaging.factory import orientation_margin, phantom, png_claiming, write_jpeg
from worker.imaging import DecodeOptions, decode_path, to_model_input
from worker.imaging.errors import Disposition, TooLarge, UnreadableScan


def test_kermany_224_jpegs_come_out_unchanged(shared_data: Path) -> None:
    """The trainer's labelled 224 x 224 3-channel grey JPEGs must reach the model as is."""
    files = sorted((shared_data / "chest_xray" / "val").glob("*/*.jpeg"))[::50]
    assert len(files) >= 5
    for path in files:
        original = np.asarray(Image.open(path).convert("RGB"))
        model_input = to_model_input(decode_path(path))
        assert model_input.shape == original.shape == (224, 224, 3)
        np.testing.assert_array_equal(model_input, original, err_msg=path.name)


def test_grey_jpeg_keeps_its_grey_levels(tmp_path: Path) -> None:
    grey = phantom(10, 240, np.uint8, rows=224, columns=224)
    path = write_jpeg(grey, tmp_path / "scan.jpg", quality=100)

    radiograph = decode_path(path)

    assert radiograph.metadata.format == "jpeg"
    assert radiograph.metadata.photometric_interpretation == "MONOCHROME2"
    assert (radiograph.metadata.rows, radiograph.metadata.columns) == (224, 224)
    decoded = np.asarray(Image.open(path))
    np.testing.assert_array_equal(to_model_input(radiograph)[:, :, 0], decoded)
    assert orientation_margin(radiograph.pixels) > 0.3


def test_rgb_jpeg_becomes_its_luma(tmp_path: Path) -> None:
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[:, :32] = (200, 40, 40)
    rgb[:, 32:] = (40, 200, 40)
    path = write_jpeg(rgb, tmp_path / "colour.jpg", quality=100, subsampling=0)

    radiograph = decode_path(path, DecodeOptions(draft_size=None))

    assert radiograph.metadata.photometric_interpretation == "RGB"
    assert "RGB converted to grey (luma)" in radiograph.decisions
    luma = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(radiograph.pixels, luma, atol=1e-6)
    # With draft mode the decoder takes libjpeg's Y channel directly: the same luma.
    drafted = decode_path(path)
    assert "RGB JPEG decoded as its luma (Y) channel" in drafted.decisions
    np.testing.assert_allclose(drafted.pixels, luma, atol=2 / 255)


def test_big_jpeg_is_decoded_at_reduced_size_but_not_below_the_model_size(
    tmp_path: Path,
) -> None:
    grey = phantom(0, 255, np.uint8, rows=1800, columns=2000)
    path = write_jpeg(grey, tmp_path / "big.jpg", quality=90)

    drafted = decode_path(path, DecodeOptions(draft_size=224))
    default = decode_path(path)
    full = decode_path(path, DecodeOptions(draft_size=None))

    assert "JPEG draft decode 2000x1800 -> 250x225" in drafted.decisions
    assert drafted.pixels.shape == (225, 250)
    assert "JPEG draft decode 2000x1800 -> 500x450" in default.decisions
    assert (drafted.metadata.rows, drafted.metadata.columns) == (1800, 2000)
    assert full.pixels.shape == (1800, 2000)
    assert not any("draft" in d for d in full.decisions)
    difference = np.abs(
        to_model_input(drafted).astype(np.int16) - to_model_input(full).astype(np.int16)
    )
    assert float(difference.mean()) < 2.0  # DCT scaling averages like the area resize


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    stored = np.zeros((40, 60), dtype=np.uint8)
    stored[0:10, 0:10] = 255  # a white mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = write_jpeg(stored, tmp_path / "rotated.jpg", quality=100, exif=exif.tobytes())

    radiograph = decode_path(path)

    assert "EXIF orientation 6 applied" in radiograph.decisions
    assert radiograph.pixels.shape == (60, 40)
    assert (radiograph.metadata.rows, radiograph.metadata.columns) == (60, 40)
    assert radiograph.pixels[2:8, -8:-2].mean() > 0.9  # the mark is now top-right
    assert radiograph.pixels[2:8, 2:8].mean() < 0.1


@pytest.mark.parametrize(
    ("peak", "bits"), [(4095, 12), (65535, 16), (1023, 10), (2000, 12), (200, 8)]
)
def test_16_bit_png_is_scaled_by_the_bit_depth_it_uses(
    tmp_path: Path, peak: int, bits: int
) -> None:
    values = phantom(0, peak, np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(values).save(path)

    radiograph = decode_path(path)

    assert radiograph.metadata.format == "png"
    assert radiograph.metadata.bits_stored == 16
    assert f"16-bit image scaled by {2**bits - 1} ({bits}-bit content)" in radiograph.decisions
    np.testing.assert_allclose(radiograph.pixels, values / (2**bits - 1), atol=1e-6)


def test_8_bit_png_grey_rgb_palette_and_alpha(tmp_path: Path) -> None:
    grey = phantom(0, 255, np.uint8)
    sources = {
        "L": Image.fromarray(grey),
        "RGB": Image.fromarray(grey).convert("RGB"),
        "P": Image.fromarray(grey).convert("P"),
        "LA": Image.fromarray(grey).convert("LA"),
    }
    for mode, image in sources.items():
        path = tmp_path / f"{mode}.png"
        image.save(path)
        radiograph = decode_path(path)
        np.testing.assert_allclose(radiograph.pixels, grey / 255.0, atol=1e-6, err_msg=mode)


def test_format_is_sniffed_from_content_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.dcm"
    Image.fromarray(phantom(0, 255, np.uint8)).save(path, format="PNG")

    assert decode_path(path).metadata.format == "png"


def test_png_decompression_bomb_is_rejected_before_decoding(tmp_path: Path) -> None:
    """Pillow's own guard fires first for absurd claims; ours for anything over the cap."""
    absurd = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    # 85.5 M: over our 80 M cap, under the 89 M where Pillow starts warning.
    over_cap = png_claiming(tmp_path / "over_cap.png", 9_500, 9_000)
    assert absurd.stat().st_size < 200

    with pytest.raises(TooLarge, match=r"bomb\.png: the image claims more pixels") as info:
        decode_path(absurd)
    assert info.value.status is Disposition.REJECTED
    with pytest.raises(TooLarge, match=r"over_cap\.png: .*\(9500 x 9000 pixels\).*CXR_MAX_PIXELS"):
        decode_path(over_cap)


def test_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    path = write_jpeg(phantom(0, 255, np.uint8, rows=300, columns=300), tmp_path / "cut.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(UnreadableScan, match=r"cut\.jpg: its JPEG image data could not be") as info:
        decode_path(path)
    assert info.value.status is Disposition.FAILED


@pytest.mark.parametrize("content", [b"\x00" * 0, b"not an image at all, just text\n" * 40])
def test_empty_and_unknown_files_are_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mystery.dcm"
    path.write_bytes(content)

    with pytest.raises(
        UnreadableScan, match=r"mystery\.dcm: (is empty|is not a DICOM, JPEG or PNG)"
    ):
        decode_path(path)


def test_random_bytes_are_unreadable(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for index in range(20):
        path = tmp_path / f"random{index}.bin"
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(UnreadableScan, match=rf"random{index}\.bin: "):
            decode_path(path)


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")
def test_random_bytes_behind_real_magic_are_unreadable(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name, prefix in [
        ("jpeg", b"\xff\xd8\xff\xe0"),
        ("png", b"\x89PNG\r\n\x1a\n"),
        ("dicom", b"\x00" * 128 + b"DICM"),
        ("bare", b"\x08\x00\x05\x00"),
    ]:
        path = tmp_path / name
        path.write_bytes(prefix + noise)
        with pytest.raises(UnreadableScan):
            decode_path(path)


def test_missing_file_and_folder_are_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableScan, match=r"gone\.dcm: does not exist"):
        decode_path(tmp_path / "gone.dcm")
    with pytest.raises(UnreadableScan, match="is not a regular file"):
        decode_path(tmp_path)
