"""From modality values to display values in [0, 1]: the header's VOI LUT or window when
it is sane, a robust percentile stretch when it is not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydicom.pixels.processing import apply_voi

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

FloatImage = npt.NDArray[np.float32]
VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]

ROBUST_PERCENTILES = (0.5, 99.5)
FALLBACK = "percentile 0.5-99.5 fallback"
# Percentiles are taken on a strided sample of about this many pixels per side: plenty
# for a 0.5 % tail, and ten times faster than a full sort of a 2000 x 2000 image.
STATS_SIDE = 512
# A header window covering less than this share of the robust pixel range saturates
# most of the image; pixels filling less than this share of the window give a flat grey.
MIN_OVERLAP = 0.10
# An image is flat when 99 % of its pixels (the 0.5th to the 99.5th percentile, as for
# the window fallback) span at most two levels: one value and the +-1 of JPEG or dither
# noise around it. It is checked on the stored values of a DICOM image, before any
# window or percentile stretch could blow that noise up to full contrast, and on the
# display values of every image (in 8-bit grey levels, as the model sees them). Such an
# image is a uniform field with at most 1 % of specks (a hot pixel, a burnt-in marker):
# nothing to classify. A radiograph, even one mostly collimated black, has anatomy on
# far more than 1 % of its area, spanning tens of levels in 8 bits and hundreds in 12;
# a blank, saturated or wrongly rescaled export does not. (2.5, not 2: float32 levels
# are not exact multiples.)
FLAT_LEVELS = 2.5
DISPLAY_LEVEL = 1.0 / 255.0


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window from the header (Window Center/Width and VOI LUT Function)."""

    center: float
    width: float
    function: VoiFunction = "LINEAR"

    def describe(self) -> str:
        """The window as a reader would quote it."""
        suffix = "" if self.function == "LINEAR" else f", {self.function}"
        return f"WC={self.center:g}, WW={self.width:g}{suffix}"


def robust_range(values: npt.NDArray[Any]) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of `values`, ignoring hot pixels and markers."""
    step = max(1, max(values.shape) // STATS_SIDE)
    sample = values[::step, ::step]
    low, high = np.percentile(sample, ROBUST_PERCENTILES)
    return float(low), float(high)


def content_problem(pixels: FloatImage) -> str | None:
    """Why display pixels carry no image (non-finite, or flat), or None when they do."""
    if pixels.size == 0:
        return "has no pixels"
    if not (np.isfinite(pixels.min()) and np.isfinite(pixels.max())):
        return "has display values that are not finite numbers"
    low, high = robust_range(pixels)
    if high - low < FLAT_LEVELS * DISPLAY_LEVEL:
        return (
            f"is flat: 99 % of its pixels lie within two grey levels of {low:.3f} "
            "(0 black, 1 white)"
        )
    return None


def stored_content_problem(stored: npt.NDArray[Any]) -> str | None:
    """Why stored (integer) pixel values carry no image (flat), or None when they do."""
    if stored.size == 0:
        return "has no pixels"
    low, high = robust_range(stored)
    if high - low < FLAT_LEVELS:
        return f"is flat: 99 % of its pixels have one of three adjacent values (from {low:g})"
    return None


def stretch(values: FloatImage, low: float, high: float) -> FloatImage:
    """Map `low`..`high` linearly to 0..1, clipping outside."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    scaled = (values - np.float32(low)) * np.float32(1.0 / (high - low))
    return np.clip(scaled, 0.0, 1.0, out=scaled).astype(np.float32, copy=False)


def apply_window(values: FloatImage, window: Window) -> FloatImage:
    """Apply a window as PS3.3 C.11.2.1.2 defines it, with output range 0..1."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        exponent = np.float32(-4.0 / width) * (values - np.float32(center))
        out: FloatImage = np.reciprocal(np.float32(1.0) + np.exp(exponent))
        return out
    if window.function == "LINEAR_EXACT":
        offset, scale = center, width
    else:
        # LINEAR is defined on integer steps: centre - 0.5, width - 1.
        offset, scale = center - 0.5, max(width - 1.0, 1e-6)
    scaled = (values - np.float32(offset)) * np.float32(1.0 / scale) + np.float32(0.5)
    return np.clip(scaled, 0.0, 1.0, out=scaled).astype(np.float32, copy=False)


def window_problem(window: Window, low: float, high: float) -> str | None:
    """Why a header window should not be used on pixels spanning `low`..`high`, or None."""
    center, width = window.center, window.width
    minimum_width = 1.0 if window.function == "LINEAR" else 0.0
    if not (math.isfinite(center) and math.isfinite(width)) or width <= minimum_width:
        return f"has an unusable width ({width:g})"
    window_low, window_high = center - width / 2, center + width / 2
    pixel_range = f"{low:g}..{high:g}"
    if high <= low:
        inside = window_low <= low <= window_high
        return None if inside else f"lies outside the (constant) pixel value {low:g}"
    overlap = min(window_high, high) - max(window_low, low)
    if overlap <= 0:
        return f"lies entirely outside the pixel range {pixel_range}"
    if overlap < MIN_OVERLAP * (high - low):
        return f"covers only {100 * overlap / (high - low):.0f}% of the pixel range {pixel_range}"
    if overlap < MIN_OVERLAP * width:
        return f"is {width / overlap:.0f} times wider than the pixel range {pixel_range}"
    return None


def header_window(ds: Dataset) -> tuple[Window | None, str | None]:
    """The first window in the header, or None; plus a note when it cannot be read."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None, None
    try:
        center = _first_number(ds["WindowCenter"].value)
        width = _first_number(ds["WindowWidth"].value)
        function_text = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    except (ValueError, TypeError, IndexError) as exc:
        return None, f"header window unreadable ({exc})"
    if center is None or width is None:
        return None, None
    note = None
    function: VoiFunction = "LINEAR"
    if function_text in ("LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR_EXACT" if function_text == "LINEAR_EXACT" else "SIGMOID"
    elif function_text != "LINEAR":
        note = f"unknown VOI LUT Function {function_text!r} treated as LINEAR"
    return Window(center, width, function), note


def to_display(
    values: FloatImage, ds: Dataset, *, bits_stored: int, stored_values: bool
) -> tuple[FloatImage, list[str]]:
    """Turn modality values into display values in [0, 1] (before any inversion).

    Order of preference: the VOI LUT Sequence, the first Window Center/Width, and without
    either, stored 8-bit values as they are (an 8-bit image is already display-ready, as a
    JPEG export of it would be) or a 0.5-99.5 percentile stretch. A header VOI that would
    show nothing useful (outside the pixel range, saturating, flat) is replaced by the
    percentile stretch, and the decision says so.

    Args:
        values: Modality values (after rescale / Modality LUT).
        ds: The dataset, for its VOI LUT Module.
        bits_stored: Bits Stored, for the no-VOI 8-bit case.
        stored_values: True when `values` are the unsigned stored pixel values (no
            rescale, no Modality LUT).
    """
    decisions: list[str] = []
    low, high = robust_range(values)
    if ds.get("VOILUTSequence"):
        mapped, note = _voi_lut(values, ds)
        if mapped is not None:
            return mapped, [note]
        decisions.append(note)
    window, window_note = header_window(ds)
    if window_note:
        decisions.append(window_note)
    if window is not None:
        problem = window_problem(window, low, high)
        if problem is None:
            decisions.append(f"window from header {window.describe()}")
            return apply_window(values, window), decisions
        decisions.append(f"header window {window.describe()} {problem}: {FALLBACK}")
        return _fallback(values, low, high), decisions
    if stored_values and bits_stored <= 8:
        decisions.append(f"{bits_stored}-bit pixels shown as stored (no window in header)")
        return stretch(values, 0.0, float(2**bits_stored - 1)), decisions
    decisions.append(f"no window in header: {FALLBACK} ({low:g}..{high:g})")
    return _fallback(values, low, high), decisions


def _fallback(values: FloatImage, low: float, high: float) -> FloatImage:
    if high <= low:
        # Fewer than 1 % of pixels differ from the rest: min-max still shows them.
        low, high = float(values.min()), float(values.max())
    return stretch(values, low, high)


def _voi_lut(values: FloatImage, ds: Dataset) -> tuple[FloatImage | None, str]:
    """Apply the first VOI LUT; None and the reason when it is unusable."""
    try:
        item = ds.VOILUTSequence[0]
        entries, first_mapped, _bits = (int(v) for v in item.LUTDescriptor)
        entries = entries or 2**16
        table_input = np.arange(first_mapped, first_mapped + entries, dtype=np.int64)
        table = np.asarray(apply_voi(table_input, ds), dtype=np.float32)
        mapped = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds), dtype=np.float32)
    except (ValueError, TypeError, IndexError, AttributeError, NotImplementedError) as exc:
        return None, f"VOI LUT unusable ({exc}): ignored"
    table_low, table_high = float(table.min()), float(table.max())
    if table_high <= table_low:
        return None, "VOI LUT is constant: ignored"
    out = stretch(mapped, table_low, table_high)
    out_low, out_high = robust_range(out)
    if out_high - out_low < MIN_OVERLAP:
        return None, "VOI LUT maps the pixels to almost one value: ignored"
    return out, f"VOI LUT from header ({entries} entries)"


def _first_number(value: object) -> float | None:
    """The first value of a DS element that may be multi-valued or empty."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    if isinstance(value, int | float | str):
        return float(value)
    raise TypeError(f"{value!r} is not a number")
