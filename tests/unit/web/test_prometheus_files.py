"""deploy/prometheus: a valid scrape config, and alert rules on metrics /metrics exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.web.conftest import Web

PROMETHEUS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
_METRIC = re.compile(r"\b(cxr_[a-z_]+)\b")


def _load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((PROMETHEUS / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_scrape_config_reads_metrics_from_the_web_process() -> None:
    config = _load("prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    assert config["rule_files"] == ["alerts.yml"]


def test_the_three_alerts_use_only_metrics_that_are_exposed(web: Web) -> None:
    rules = _load("alerts.yml")["groups"][0]["rules"]
    assert [rule["alert"] for rule in rules] == [
        "CxrNoWorkerSeen",
        "CxrQueueGrowing",
        "CxrFailuresRising",
    ]
    exposed = {
        sample.name
        for family in text_string_to_metric_families(web.client.get("/metrics").text)
        for sample in family.samples
    }
    for rule in rules:
        used = set(_METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, f"{rule['alert']} uses {used - exposed}, not exposed"


def test_the_alerts_fire_when_they_should_and_not_otherwise() -> None:
    """`promtool test rules` on series for each alert and for a healthy service."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is absent: `apt-get install prometheus` to test the alert rules")
    cases = Path(__file__).resolve().parents[2] / "data" / "prometheus" / "alerts_test.yml"
    done = subprocess.run(
        [promtool, "test", "rules", cases.name],
        cwd=cases.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
