"""C-STORE of a report SR and a heatmap SC together, to DCMTK's storescp as the PACS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.integration.pacs.conftest import StoreSCP, dicom_tool
from tests.processes import free_port, wait_until
from worker.pacs.delivery import store_reports
from worker.pacs.heatmap_sc import build_heatmap_sc
from worker.pacs.report import ResultFacts, build_report, device_observer_uid

pytestmark = pytest.mark.integration
CHEST = "cr_chest_pa_mono1_j2k_lossless.dcm"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
# A storescp that takes reports but no images: a PACS not configured for the heatmaps.
SR_ONLY = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[ReportsOnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = ComprehensiveSRStorage\\Uncompressed
[[Profiles]]
[SR]
PresentationContexts = ReportsOnly
"""


class ReportsOnlySCP(StoreSCP):
    """storescp configured (`--config-file`) to accept Comprehensive SR Storage only."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.received = workdir / "received"
        self.received.mkdir(parents=True)
        config = workdir / "storescp.cfg"
        config.write_text(SR_ONLY)
        self._log = (workdir / "storescp.log").open("wb")
        self.process = subprocess.Popen(
            [
                dicom_tool("storescp", "dcmtk"),
                "--aetitle", self.ae_title,
                "--config-file", str(config), "SR",
                "--output-directory", str(self.received),
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._listening, timeout=20, what=f"storescp on port {self.port}")


@pytest.fixture
def reports_only(tmp_path: Path) -> Iterator[ReportsOnlySCP]:
    scp = ReportsOnlySCP(tmp_path / "reports-only")
    try:
        yield scp
    finally:
        scp.stop()


def _picture() -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)


def _instances(dicom_dir: Path) -> tuple[Dataset, Dataset]:
    image = dcmread(dicom_dir / CHEST, stop_before_pixels=True)
    facts = ResultFacts(
        label="PNEUMONIA",
        positive_class="PNEUMONIA",
        probability=0.81,
        threshold=0.5,
        model_version="tiny-1",
        scan_sha256="ef" * 32,
    )
    device = device_observer_uid("CXR_SCREEN")
    report = build_report(image, facts, device_uid=device)
    heatmap = build_heatmap_sc(image, _picture(), facts, device_uid=device)
    return report, heatmap


def _received(scp: StoreSCP) -> dict[str, Dataset]:
    return {str(d.SOPClassUID): d for d in map(dcmread, sorted(scp.received.iterdir()))}


def test_a_report_and_its_heatmap_are_stored_over_one_association(
    dicom_dir: Path, storescp: StoreSCP
) -> None:
    report, heatmap = _instances(dicom_dir)
    outcomes = store_reports(
        [report, heatmap],
        destination=storescp.destination,
        calling_ae_title="CXR_SCREEN",
        timeout=10,
    )
    assert [o.stored for o in outcomes] == [True, True], outcomes
    assert [o.detail for o in outcomes] == ["status 0x0000", "status 0x0000"]
    received = _received(storescp)
    assert set(received) == {SR_CLASS, SC_CLASS}
    assert received[SR_CLASS].SOPInstanceUID == report.SOPInstanceUID
    stored_heatmap = received[SC_CLASS]
    assert stored_heatmap.SOPInstanceUID == heatmap.SOPInstanceUID
    assert stored_heatmap.StudyInstanceUID == report.StudyInstanceUID
    assert stored_heatmap.BurnedInAnnotation == "YES"
    assert np.array_equal(stored_heatmap.pixel_array, _picture()), "the picture arrives intact"


def test_a_pacs_that_refuses_secondary_capture_still_gets_the_report(
    dicom_dir: Path, reports_only: ReportsOnlySCP
) -> None:
    report, heatmap = _instances(dicom_dir)
    outcomes = store_reports(
        [heatmap, report],
        destination=reports_only.destination,
        calling_ae_title="CXR_SCREEN",
        timeout=10,
    )
    refused, stored = outcomes
    assert stored.stored, stored
    assert not refused.stored
    assert refused.detail == (
        f"{reports_only.destination} does not accept Secondary Capture Image Storage; "
        f"allow SOP class {SC_CLASS} for this node in the PACS"
    )
    assert set(_received(reports_only)) == {SR_CLASS}
