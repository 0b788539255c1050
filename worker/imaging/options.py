"""Decoder limits and policy (`DecodeOptions`); `worker.decode_config` builds them from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

# DICOM Body Part Examined values (upper case) taken as a chest unless a site says otherwise.
DEFAULT_CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "CHEST_TO_PELVIS", "TORSO", "BREAST_CHEST")


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What the decoder accepts and how hard it works.

    Attributes:
        max_file_bytes: Files larger than this are rejected before a byte is read.
        max_pixels: Images whose header claims more pixels (rows x columns x frames) are
            rejected before decoding, so a decompression bomb cannot exhaust memory.
        chest_body_parts: DICOM Body Part Examined values taken as a chest (upper case).
            An absent or empty body part is accepted; any other explicit value is rejected.
        pseudonym_key: HMAC key of the pseudonymous patient reference.
        draft_size: Big JPEGs are decoded at a reduced scale (libjpeg DCT scaling) but
            never below this many pixels per side; None decodes at full size. Twice the
            model's 224: DCT scaling averages fixed 8 x 8 blocks, so decoding straight to
            about 224 and then resizing moves sharp edges by up to half a block. On the 60
            full-resolution Kermany JPEGs the model input then differs from a full decode
            by 1.3 grey levels on average, against 0.5 at 448; 448 is 15-20 % slower
            than 224 and still 1.5-1.8 times as fast as a full decode
            (bench/results/decode.md).
    """

    max_file_bytes: int = 512 * 1024**2
    max_pixels: int = 80_000_000
    chest_body_parts: tuple[str, ...] = DEFAULT_CHEST_BODY_PARTS
    pseudonym_key: bytes = field(default=b"", repr=False)
    draft_size: int | None = 448

    def __post_init__(self) -> None:
        if self.max_file_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("max_file_bytes and max_pixels must be positive")
        if self.draft_size is not None and self.draft_size <= 0:
            raise ValueError("draft_size must be positive or None")
        # Header values are compared upper case; normalise once here, not per scan.
        normalised = tuple(part.strip().upper() for part in self.chest_body_parts)
        object.__setattr__(self, "chest_body_parts", normalised)
