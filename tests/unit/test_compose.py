"""docker-compose.yml is a valid Compose file whose every command the CLI accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from worker.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    # The pinned schema predates the top-level `name:` key that current Compose accepts.
    document = {k: v for k, v in compose.items() if k != "name"}
    jsonschema.Draft201909Validator(schema).validate(document)


def test_every_cxr_screen_command_is_one_the_cli_accepts(compose: dict[str, Any]) -> None:
    runner = CliRunner()
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if isinstance(service.get("command"), list) and service["command"][0] == "cxr-screen"
    }
    assert {"migrate", "watcher", "worker-gpu", "worker-cpu", "trainer", "beat"} <= set(commands)
    for name, command in commands.items():
        # --help after the arguments: click still parses (and rejects) unknown commands
        # and options, but runs nothing.
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{name}: {command} -> {result.output}"


def test_secrets_come_from_the_environment_and_fail_fast(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "CXR_PSEUDONYM_KEY",
        "FLOWER_USER",
        "FLOWER_PASSWORD",
    ):
        assert f"${{{secret}:?" in text, f"{secret} must be required with ${{VAR:?}}"
    assert "ports" not in compose["services"]["redis"], "Redis must not be published"
    assert compose["services"]["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_services_wait_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "postgres"):
        assert "healthcheck" in services[name]
    for name in ("watcher", "worker-gpu", "worker-cpu", "trainer", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_no_secret_is_on_a_command_line(compose: dict[str, Any]) -> None:
    """`ps` shows every process's argv to every user of the host: secrets go by environment."""
    for name, service in compose["services"].items():
        command = service.get("command") or []
        argv = command if isinstance(command, list) else [command]
        for arg in argv:
            # A shell may set variables (export X=...) and feed stdin with builtins; what
            # it runs must carry none.
            executed = str(arg).split("exec", 1)[-1].split("|", 1)[-1]
            for secret in ("PASSWORD", "BASIC_AUTH", "PSEUDONYM_KEY", "@redis", "@postgres"):
                assert secret not in executed, f"{name}: {secret} on the command line: {arg}"
        check = service.get("healthcheck", {}).get("test", [])
        assert "PASSWORD" not in " ".join(map(str, check)), f"{name}: secret in healthcheck"
    flower = compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert ":?" in flower.split("}:")[0], "the user is required"
    assert ":?" in flower.split("}:")[1], "the password is required, not just the colon"
