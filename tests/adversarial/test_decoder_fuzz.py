"""Property: whatever is done to the real DICOM files' headers and pixel data, the decoder,
the metadata reader and `inspect` end in a typed outcome, within a memory bound.

Every mutation starts from a real file in ../shared/data/dicom (or a small crop of one,
re-encoded, for the codecs the real files have only at full size). The outcome must be a
`Radiograph` whose pixels are finite in [0, 1], or a `ScreeningError` with the status
`rejected` or `failed` and a code; any other exception fails the property.

Peak memory bound (tracemalloc: Python objects and NumPy buffers, measured in-process
around one decode, after a warm-up so imports are not counted), with F the file-size cap
(`max_file_bytes`) and P the pixel cap (`max_pixels`, counting samples):

    peak <= 6 F + 32 P + 16 MiB

- 6 F: the dataset's element values (a copy of the file), a Deflated dataset inflated
  (at most F, the guard's cap) and read again, and the checked frame and its
  re-encapsulation (each at most the file).
- 32 P: per decoded sample, the decoder's output and pydicom's array (2 bytes each for
  16-bit), float32 modality values, the stretched or windowed copy and its temporary (4
  bytes each), and for PALETTE COLOR the 16-bit RGB lookup and its float32 copy (18 bytes
  a pixel). Measured on pydicom's samples tiled large: 12 bytes a sample for 16-bit grey,
  9 for RGB, 24 for PALETTE COLOR (file copies included); 32 covers the worst.
- 16 MiB: pydicom's parsed dataset objects, and percentile samples (512 x 512).

With the caps below that is 82.6 MiB, and the decodes here peak at about 25 MiB. A
decompression bomb is what breaks it: the issue's 12000 x 12000 JPEG needs 144 MB for
its decoded bytes alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cxr_screen.cli.inspect_cmd import ACCEPTED, _inspect_file
from tests.adversarial.dicom_mutations import (
    HEADER_VALUES,
    TRANSFER_SYNTAXES,
    Edit,
    apply_edits,
    derived_seeds,
    measured,
    mutate_header,
    mutate_pixel_data,
    with_transfer_syntax,
)
from worker.imaging import (
    DecodeOptions,
    Radiograph,
    ScanMetadata,
    decode_bytes,
    read_metadata_bytes,
)
from worker.imaging.errors import Disposition, ScreeningError

hypothesis = pytest.importorskip(
    "hypothesis", reason="hypothesis is a dev dependency: pip install -e '.[dev]'"
)
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MIB = 1024**2
# Caps that hold every real file (4.3 MB at most) but refuse the full-size images at the
# header (3.7-4.3 M pixels), so each example costs milliseconds, not a JPEG 2000 decode.
OPTIONS = DecodeOptions(max_file_bytes=5 * MIB, max_pixels=1_200_000, pseudonym_key=b"k" * 32)
PEAK_BOUND = 6 * OPTIONS.max_file_bytes + 32 * OPTIONS.max_pixels + 16 * MIB
OUTCOME_STATUSES = (Disposition.REJECTED, Disposition.FAILED)
# Deterministic and bounded: the same examples on every run (no example database); a
# decode takes milliseconds under these caps, so the file runs in well under a minute.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def seeds(dicom_dir: Path) -> dict[str, bytes]:
    """The six real files and three small derived ones, each decoded once unmeasured."""
    files = {path.name: path.read_bytes() for path in sorted(dicom_dir.glob("*.dcm"))}
    files.update(derived_seeds(dicom_dir))
    for name, data in files.items():
        _outcome(data, name)  # warm-up: plugin imports and caches are not the file's cost
    return files


def _outcome(data: bytes, name: str) -> object:
    with warnings.catch_warnings():
        # pydicom warns about every odd value it reads; warnings are not outcomes.
        warnings.simplefilter("ignore")
        try:
            return decode_bytes(data, Path(name), OPTIONS)
        except ScreeningError as exc:
            return exc


def _check_decode(data: bytes, name: str) -> None:
    """The property for one mutated file: a typed outcome, and the memory bound."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = measured(lambda: decode_bytes(data, Path(name), OPTIONS))
        metadata = measured(lambda: read_metadata_bytes(data, Path(name), OPTIONS))
    _assert_typed(result.outcome, Radiograph)
    _assert_typed(metadata.outcome, ScanMetadata)
    if isinstance(result.outcome, Radiograph):
        pixels = result.outcome.pixels
        assert pixels.ndim == 2
        assert pixels.dtype == np.float32
        assert pixels.size <= OPTIONS.max_pixels
        assert np.isfinite(pixels).all()
        assert 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0
    assert result.peak <= PEAK_BOUND, f"decode peak {result.peak / MIB:.1f} MiB"
    assert metadata.peak <= PEAK_BOUND, f"metadata peak {metadata.peak / MIB:.1f} MiB"


def _assert_typed(outcome: object, success: type) -> None:
    if isinstance(outcome, success):
        return
    assert isinstance(outcome, ScreeningError), f"untyped outcome {outcome!r}"
    assert outcome.status in OUTCOME_STATUSES, outcome
    assert outcome.code
    assert outcome.code != ScreeningError.code, outcome


SEED_NAMES = st.sampled_from(
    [
        "cr_chest_sc_jpeg_baseline.dcm",
        "dx_thorax_lateral_animal.dcm",
        "crop_j2k.dcm",
        "crop_rle.dcm",
        "deflated.dcm",
        "cr_chest_pa_mono1_j2k_lossless.dcm",
        "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
        "cr_hip_jpeg_lossless.dcm",
        "broken_cr_hip_jpeg_extended.dcm",
    ]
)
HEADER_CHANGES = st.lists(
    st.sampled_from(sorted(HEADER_VALUES)).flatmap(
        lambda keyword: st.tuples(st.just(keyword), st.sampled_from(HEADER_VALUES[keyword]))
    ),
    min_size=1,
    max_size=4,
)
# Positions: half of them in the first 2 KiB after the preamble (which readers ignore),
# where the headers are (the DICOM header, the JPEG markers, the JPEG 2000 SIZ, the RLE
# offsets), the others anywhere.
POSITIONS = st.one_of(st.integers(128, 2048), st.integers(0, 2**24))
EDITS = st.lists(
    st.builds(
        Edit,
        kind=st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
        position=POSITIONS,
        value=st.integers(0, 255),
        count=st.integers(1, 70_000),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(name=SEED_NAMES, changes=HEADER_CHANGES, body_part=st.booleans())
# Found by this property on the old decoder: NaN pixels accepted with a label.
@example(name="deflated.dcm", changes=[("RescaleIntercept", "nan")], body_part=False)
def test_header_mutations_end_typed(
    seeds: dict[str, bytes], name: str, changes: list[tuple[str, object]], body_part: bool
) -> None:
    """Rows, Columns, bits, samples, photometric, rescale, window, frames, scope values."""
    # The hip files are rejected by body part before any pixel: half the time, let the
    # mutated header reach the pixel checks by calling them chests.
    extra = [("BodyPartExamined", "CHEST")] if body_part and "hip" in name else []
    _check_decode(mutate_header(seeds[name], [*changes, *extra]), name)


@FUZZ
@given(name=SEED_NAMES, uid=st.sampled_from(TRANSFER_SYNTAXES), changes=HEADER_CHANGES)
def test_transfer_syntax_lies_end_typed(
    seeds: dict[str, bytes], name: str, uid: str, changes: list[tuple[str, object]]
) -> None:
    """A meta header naming another encoding than the dataset's, plus header changes."""
    _check_decode(with_transfer_syntax(mutate_header(seeds[name], changes), uid), name)


@FUZZ
@given(name=SEED_NAMES, edits=EDITS)
def test_pixel_data_mutations_end_typed(
    seeds: dict[str, bytes], name: str, edits: list[Edit]
) -> None:
    """Byte flips, truncation, insertions and deletions inside the frame's codestream."""
    data = seeds[name]
    if "hip" in name:
        data = mutate_header(data, [("BodyPartExamined", "CHEST")])
    _check_decode(mutate_pixel_data(data, edits), name)


@FUZZ
@given(name=SEED_NAMES, edits=EDITS)
# Found by this property on the old decoder: a file cut inside a sequence item raised
# pydicom's OSError, an unknown VR in SOP Class UID (read lazily) NotImplementedError.
@example(name="cr_chest_pa_mono1_j2k_lossless.dcm", edits=[Edit("truncate", 927)])
@example(name="dx_thorax_lateral_animal.dcm", edits=[Edit("set", 393, 0xFF)])
def test_file_mutations_end_typed(seeds: dict[str, bytes], name: str, edits: list[Edit]) -> None:
    """The same edits on the whole file: preamble, meta, dataset encoding, item tags."""
    _check_decode(apply_edits(seeds[name], edits), name)


@settings(FUZZ, max_examples=40)
@given(name=SEED_NAMES, edits=EDITS, changes=HEADER_CHANGES)
def test_inspect_ends_typed(
    seeds: dict[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    edits: list[Edit],
    changes: list[tuple[str, object]],
) -> None:
    """`cxr-screen inspect`'s per-file path: accepted, or rejected/failed with a code."""
    path = tmp_path_factory.mktemp("inspect") / name
    path.write_bytes(apply_edits(mutate_header(seeds[name], changes), edits))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finding = _inspect_file(path, OPTIONS, None, 0)

    if finding.outcome == ACCEPTED:
        assert finding.code is None
    else:
        assert finding.outcome in {str(status) for status in OUTCOME_STATUSES}, finding
        assert finding.code
        assert finding.message
        assert finding.message.startswith(f"{name}: ")
