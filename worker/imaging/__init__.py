"""Radiograph decoding: any DICOM, JPEG or PNG chest X-ray to display pixels and model input."""

from worker.imaging.decode import (
    decode_bytes,
    decode_path,
    read_metadata,
    read_metadata_bytes,
    sniff_format,
)
from worker.imaging.options import DecodeOptions
from worker.imaging.radiograph import Radiograph, ScanFormat, ScanMetadata
from worker.imaging.resize import MODEL_INPUT_SIZE, to_model_input

__all__ = [
    "MODEL_INPUT_SIZE",
    "DecodeOptions",
    "Radiograph",
    "ScanFormat",
    "ScanMetadata",
    "decode_bytes",
    "decode_path",
    "read_metadata",
    "read_metadata_bytes",
    "sniff_format",
    "to_model_input",
]
