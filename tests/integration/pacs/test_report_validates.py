"""The SR built from each real radiograph passes dciodvfy (dicom3tools) and parses back."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread

from tests.integration.pacs.conftest import dicom_tool
from worker.pacs.report import ResultFacts, build_report, device_observer_uid

pytestmark = pytest.mark.integration


def _problems(path: Path) -> tuple[str, list[str]]:
    checked = subprocess.run(
        [dicom_tool("dciodvfy", "dicom3tools"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = checked.stdout + checked.stderr
    return said, [line for line in said.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize(
    "name",
    [
        "cr_chest_pa_mono1_j2k_lossless.dcm",
        "cr_chest_sc_jpeg_baseline.dcm",
        "dx_thorax_lateral_animal.dcm",
        "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
    ],
)
@pytest.mark.parametrize("label", ["PNEUMONIA", "NORMAL"])
def test_the_report_is_a_valid_comprehensive_sr(
    dicom_dir: Path, tmp_path: Path, name: str, label: str
) -> None:
    image = dcmread(dicom_dir / name, stop_before_pixels=True)
    facts = ResultFacts(
        label=label,
        positive_class="PNEUMONIA",
        probability=0.62 if label == "PNEUMONIA" else 0.2,
        threshold=0.5,
        model_version="tiny-1",
        scan_sha256="cd" * 32,
    )
    report = build_report(image, facts, device_uid=device_observer_uid("CXR_SCREEN"))
    path = tmp_path / "report.dcm"
    report.save_as(path, enforce_file_format=True)

    assert isinstance(hd.sr.srread(BytesIO(path.read_bytes())), hd.sr.ComprehensiveSR)
    said, errors = _problems(path)
    assert "ComprehensiveSR" in said.splitlines(), said  # the IOD it validated against
    if name.startswith("dx_chest_pa"):
        # This de-identified file's Accession Number is a 56-character hash where SH
        # allows 16. The report copies it unchanged, as the PACS matches reports to
        # studies on it; dciodvfy finds the same error in the image itself.
        assert all("Accession Number" in e or "invalid data values" in e for e in errors)
        _, image_errors = _problems(dicom_dir / name)
        assert any("Accession Number" in e for e in image_errors)
    else:
        assert errors == []
