"""Issue 13 item 5: decompression bombs built from the real files are refused, typed, before
a decoder allocates what they claim (tracemalloc peaks; RSS in a child for C decoders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import RLELossless

from tests.adversarial.dicom_mutations import (
    PADDING,
    app_segments,
    first_frame,
    j2k_with_siz,
    jp2_wrapped,
    jpeg_with_sof,
    measured,
    read_dataset,
    rle_replicating,
    to_bytes,
    with_frame,
)
from worker.imaging import DecodeOptions, Radiograph, decode_bytes
from worker.imaging.errors import TooLarge, UnreadableScan

MIB = 1024**2
# Small caps keep the bombs cheap: the header's claim fits, the stream's does not.
OPTIONS = DecodeOptions(max_pixels=1_000_000, pseudonym_key=b"k" * 32)
# Room for the real 2128 x 2000 JPEG 2000 chest, not for what its bombs claim.
J2K_OPTIONS = DecodeOptions(max_pixels=5_000_000, pseudonym_key=b"k" * 32)
JPEG_SC = "cr_chest_sc_jpeg_baseline.dcm"  # 1024 x 1024 JPEG baseline, 126 kB of stream
J2K_DX = "dx_chest_pa_mono1_inverse_plut_j2k.dcm"  # 2128 x 2000 JPEG 2000, 4.1 MB
J2K_CR = "cr_chest_pa_mono1_j2k_lossless.dcm"  # 1955 x 1841 JPEG 2000, 4.3 MB
NATIVE = "dx_thorax_lateral_animal.dcm"  # 169 x 211, 8-bit, uncompressed


def _refused_cheaply(
    data: bytes,
    name: str,
    error: type[Exception],
    budget: int,
    options: DecodeOptions = OPTIONS,
) -> str:
    """Decode under tracemalloc; assert the typed refusal and a peak within `budget`."""
    result = measured(lambda: decode_bytes(data, Path(name), options))
    assert isinstance(result.outcome, error), result.outcome
    assert result.peak < budget, f"peak {result.peak / MIB:.1f} MiB before the refusal"
    message = str(result.outcome)
    assert message.startswith(f"{name}: ")
    return message


def test_jpeg_frame_header_behind_70_kib_of_app_segments(dicom_dir: Path) -> None:
    """The issue's bomb: the header says 64 x 64, the SOF behind 70 KiB of APP1 4096 x 4096.

    The old decoder parsed 64 KiB of the fragment, found no SOF and let libjpeg allocate
    16 MiB (782 MiB for the issue's 12000 x 12000) before pydicom noticed the mismatch.
    """
    ds = read_dataset(dicom_dir / JPEG_SC)
    original = first_frame(ds)
    frame = jpeg_with_sof(original, columns=4096, rows=4096)
    assert len(frame) - len(original) > 64 * 1024  # the SOF sits past what was parsed
    data = with_frame(ds, frame, Rows=64, Columns=64)

    message = _refused_cheaply(data, "bomb.dcm", TooLarge, 2 * len(data) + MIB)

    assert "compressed pixel data claims 4096 x 4096 pixels" in message


def test_jpeg_stream_that_disagrees_with_the_header_is_refused(dicom_dir: Path) -> None:
    """Under the cap but not the header's image: refused before decoding, not after."""
    ds = read_dataset(dicom_dir / JPEG_SC)
    frame = jpeg_with_sof(first_frame(ds), columns=1000, rows=1000)
    data = with_frame(ds, frame, Rows=64, Columns=64)

    message = _refused_cheaply(data, "liar.dcm", UnreadableScan, 2 * len(data) + MIB // 2)

    assert "the codestream is 1000 x 1000 x 1 (columns x rows x samples)" in message
    assert "header says 64 x 64 x 1; refused before decoding" in message


@pytest.mark.parametrize("name", [J2K_DX, J2K_CR])
def test_jpeg2000_codestream_behind_64_kib_of_jp2_boxes(dicom_dir: Path, name: str) -> None:
    """The real codestream wrapped in a JP2 whose jp2c box sits after 70 KiB of `free`."""
    ds = read_dataset(dicom_dir / name)
    columns, rows = ds.Columns, ds.Rows
    data = with_frame(ds, jp2_wrapped(first_frame(ds)), Rows=64, Columns=64)

    message = _refused_cheaply(data, "jp2.dcm", TooLarge, 3 * len(data) + MIB)

    assert f"compressed pixel data claims {columns} x {rows} pixels" in message


def test_jpeg2000_size_raised_inside_a_jp2_is_refused(dicom_dir: Path) -> None:
    """SIZ raised to 4000 x 4000 (header kept), behind the JP2 padding: over the cap.

    The old decoder found no jp2c box in its 64 KiB and let openjpeg allocate 16 M
    samples (64 MB of int32) for a stream that holds 4.3 M."""
    ds = read_dataset(dicom_dir / J2K_DX)
    codestream = j2k_with_siz(first_frame(ds), columns=4000, rows=4000)
    data = with_frame(ds, jp2_wrapped(codestream))

    message = _refused_cheaply(data, "siz.dcm", TooLarge, 3 * len(data) + MIB, J2K_OPTIONS)

    assert "compressed pixel data claims 4000 x 4000 pixels" in message


def test_jpeg2000_tile_grid_bomb_is_refused(dicom_dir: Path) -> None:
    """Found while fixing: 9 x 9 tiles make openjpeg allocate 517 MB of tile state from
    the 4 MB file before decoding a pixel (the RSS test below measures it)."""
    ds = read_dataset(dicom_dir / J2K_DX)
    data = with_frame(ds, j2k_with_siz(first_frame(ds), tile=9))

    message = _refused_cheaply(data, "tiles.dcm", UnreadableScan, 3 * len(data) + MIB, J2K_OPTIONS)

    assert "cut into 52,851 tiles" in message


def test_rle_segment_that_decodes_past_the_image_is_refused(dicom_dir: Path) -> None:
    """200 kB of replicate runs decode to 12.8 MB; the image needs 35,659 bytes.

    pydicom decodes a segment whole before it compares lengths: the old decoder built
    the 12.8 MB bytearray (64 times the file) and only then refused it.
    """
    ds = read_dataset(dicom_dir / NATIVE)
    ds.file_meta.TransferSyntaxUID = RLELossless
    data = with_frame(ds, rle_replicating(segment_bytes=200_000))

    message = _refused_cheaply(data, "rle.dcm", UnreadableScan, 3 * len(data) + MIB)

    assert "RLE segment 1 decodes to more than 35,787 bytes" in message


def test_samples_per_pixel_counts_against_the_cap(dicom_dir: Path) -> None:
    """169 x 211 passes a 100,000 cap; three samples per pixel (107,000 values) do not.

    The old cap counted rows x columns only, so raising Samples per Pixel multiplied
    the memory it allowed; the old decoder screened this file.
    """
    ds = read_dataset(dicom_dir / NATIVE)
    grey = ds.pixel_array
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.repeat(grey[:, :, None], 3, axis=2).tobytes()
    small = DecodeOptions(max_pixels=100_000)

    outcome = measured(lambda: decode_bytes(to_bytes(ds), Path("rgb.dcm"), small)).outcome

    assert isinstance(outcome, TooLarge), outcome
    assert "claims 211 x 169 pixels x 3 samples, more than the cap of 100,000" in str(outcome)


@pytest.mark.parametrize("bits", [32, 64, 1])
def test_bits_allocated_beyond_a_radiograph_are_refused(dicom_dir: Path, bits: int) -> None:
    """32- and 64-bit (4 and 8 bytes a sample) and 1-bit data: no radiograph is stored so."""
    ds = read_dataset(dicom_dir / NATIVE)
    grey = ds.pixel_array.astype(np.uint64 if bits == 64 else np.uint32)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, min(bits, 8), min(bits, 8) - 1
    ds.PixelData = grey.tobytes() if bits > 1 else np.packbits(grey > 0).tobytes()

    result = measured(lambda: decode_bytes(to_bytes(ds), Path("bits.dcm"), OPTIONS))

    assert isinstance(result.outcome, UnreadableScan), result.outcome
    assert f"has Bits Allocated {bits}; a radiograph is stored in 8 or 16 bits" in str(
        result.outcome
    )


def test_real_files_still_decode(dicom_dir: Path) -> None:
    """The strict checks refuse none of the real chest files (nor the native one)."""
    options = DecodeOptions(pseudonym_key=b"k" * 32)
    for name in (JPEG_SC, NATIVE):
        data = (dicom_dir / name).read_bytes()
        assert isinstance(decode_bytes(data, Path(name), options), Radiograph)


def test_raster_jpeg_frame_header_behind_app_segments_cannot_pass_the_cap(
    shared_data: Path,
) -> None:
    """Verification (passed before too): Pillow reads every segment up to the first scan
    when it opens a JPEG, so the size the cap sees is the SOF's, wherever it sits."""
    real = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0].read_bytes()
    bomb = jpeg_with_sof(real, columns=8000, rows=8000)
    assert len(bomb) - len(real) == len(app_segments(PADDING)) > 64 * 1024

    message = _refused_cheaply(bomb, "bomb.jpeg", TooLarge, 2 * len(bomb) + MIB)

    assert "(8000 x 8000 pixels" in message


def test_raster_png_with_a_huge_ihdr_cannot_pass_the_cap(shared_data: Path) -> None:
    """Verification (passed before too): a real chest PNG whose IHDR claims 8000 x 8000."""
    real = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0]
    buffer = BytesIO()
    Image.open(real).convert("L").save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = (8000).to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")

    message = _refused_cheaply(bytes(png), "bomb.png", TooLarge, 2 * len(png) + MIB)

    assert "(8000 x 8000 pixels)" in message


def test_rgb_raster_counts_its_samples(shared_data: Path) -> None:
    """An RGB PNG holds three values a pixel: the cap counts them, as for DICOM."""
    real = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0]
    image = Image.open(real).convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    width, height = image.size
    cap = DecodeOptions(max_pixels=width * height * 2)

    outcome = measured(lambda: decode_bytes(buffer.getvalue(), Path("rgb.png"), cap)).outcome

    assert isinstance(outcome, TooLarge), outcome
    assert f"({width} x {height} pixels x 3 samples)" in str(outcome)


CHILD = textwrap.dedent(
    """
    import json, resource, sys, warnings
    from pathlib import Path
    warnings.simplefilter("ignore")
    from worker.imaging.errors import ScreeningError
    from worker.imaging import DecodeOptions, decode_bytes
    options = DecodeOptions(max_pixels=5_000_000, pseudonym_key=b"k" * 32)
    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Warm up every code path (imports, plugin discovery) on a small real file.
    decode_bytes(Path(sys.argv[1]).read_bytes(), Path("warm.dcm"), options)
    baseline, report = rss(), []
    for path in sys.argv[2:]:
        try:
            decode_bytes(Path(path).read_bytes(), Path(path), options)
            outcome = "decoded"
        except ScreeningError as exc:
            outcome = exc.code
        report.append([Path(path).name, outcome, rss() - baseline])
    print(json.dumps(report))
    """
)


def test_bombs_stay_small_in_a_child_process(dicom_dir: Path, tmp_path: Path) -> None:
    """Resident memory (which sees the C decoders' own allocations, unlike tracemalloc)
    grows by less than 64 MiB over all the bombs in one child. Measured: 0 MiB now; the
    old decoder grew by 52 MiB on the JPEG and to 506 MiB with the tile grid."""
    jpeg = read_dataset(dicom_dir / JPEG_SC)
    j2k = read_dataset(dicom_dir / J2K_DX)
    bombs = {
        "jpeg.dcm": with_frame(
            jpeg, jpeg_with_sof(first_frame(jpeg), columns=4096, rows=4096), Rows=64, Columns=64
        ),
        "tiles.dcm": with_frame(j2k, j2k_with_siz(first_frame(j2k), tile=9)),
    }
    j2k = read_dataset(dicom_dir / J2K_DX)
    bombs["jp2.dcm"] = with_frame(
        j2k, jp2_wrapped(j2k_with_siz(first_frame(j2k), columns=4000, rows=4000))
    )
    paths = []
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(dicom_dir / NATIVE), *paths],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [outcome for _, outcome, _ in report] == ["too_large", "unreadable", "too_large"]
    growth = report[-1][2]
    assert growth < 64 * MIB, report
