"""What decoding produces: `ScanMetadata` and `Radiograph` (display-ready pixels)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

ScanFormat = Literal["dicom", "jpeg", "png"]


@dataclass(frozen=True, slots=True)
class ScanMetadata:
    """Facts about a scan taken from its header; None where the file does not say.

    `rows` and `columns` are the image's original size (before any reduced-size decode,
    after EXIF orientation). `patient_ref` is a keyed hash of the Patient ID, never a name.
    """

    format: ScanFormat
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    rows: int | None = None
    columns: int | None = None
    transfer_syntax: str | None = None
    patient_ref: str | None = None

    def to_dict(self) -> dict[str, str | int | None]:
        """The metadata as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True, eq=False)
class Radiograph:
    """A decoded radiograph, ready to display or to resize for the model.

    Attributes:
        pixels: (H, W) float32 in [0, 1]; 1 is white, i.e. dense (bone), as a reader
            sees it on a display, whatever the file's photometric convention was.
        metadata: Facts from the header.
        decisions: What the decoder chose and why, in words (inversion, window, draft).
    """

    pixels: npt.NDArray[np.float32]
    metadata: ScanMetadata
    decisions: tuple[str, ...] = ()
