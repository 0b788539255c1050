"""docker-compose.yml is a valid Compose file whose every command the CLI accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from cxr_screen.cli.main import app

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
        "CXR_WEB_SECRET",
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


# --- secrets, read the way compose reads them --------------------------------------------
SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "CXR_PSEUDONYM_KEY",
    "CXR_WEB_SECRET",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
)
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
# Shell builtins: a secret they expand never becomes another process's argument.
_BUILTINS = ("printf", "export", "echo", "test", "[")


class UnsetVariableError(Exception):
    """A `${VAR:?message}` guard refused the environment."""


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` as compose substitutes it: `$$`, `${V}`, `${V:-d}`, `${V-d}`, `${V:?e}`, `${V?e}`."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        found = env.get(name)
        missing = found is None or (found == "" and operator is not None and operator[0] == ":")
        if operator is not None and operator.endswith("?") and missing:
            raise UnsetVariableError(f"{name}: {argument}")
        if operator is not None and operator.endswith("-") and missing:
            return str(argument)
        return found or ""

    return _VARIABLE.sub(substitute, value)


def _argvs(service: dict[str, Any]) -> list[str]:
    """Every string that becomes a process's arguments: command, entrypoint, healthcheck."""
    found: list[str] = []
    for key in ("command", "entrypoint"):
        value = service.get(key) or []
        found.extend(map(str, value if isinstance(value, list) else [value]))
    found.extend(map(str, service.get("healthcheck", {}).get("test", [])))
    return found


def _secret_env() -> dict[str, str]:
    return {name: f"sentinel-{name.lower()}-value" for name in SECRETS}


def test_no_secret_value_reaches_a_command_line_once_interpolated(compose: dict[str, Any]) -> None:
    env = _secret_env()
    interpolated = _interpolate(compose, env)
    for name, service in interpolated["services"].items():
        for arg in _argvs(service):
            for secret, value in env.items():
                assert value not in arg, f"{name}: {secret}'s value on a command line: {arg}"
    for name, service in compose["services"].items():
        for arg in _argvs(service):
            assert not re.search(r"\$\{[A-Z_]*(PASSWORD|KEY|AUTH|SECRET|TOKEN|USER)", arg), (
                f"{name}: compose would write a secret into the command line: {arg}"
            )


def test_a_shell_expands_secrets_only_in_builtins(compose: dict[str, Any]) -> None:
    """`sh -c '... $$SECRET ...'`: only a builtin (printf into a pipe) may see the value."""
    for name, service in compose["services"].items():
        for arg in _argvs(service):
            for segment in re.split(r"[;|]|&&|\|\|", arg):
                if re.search(r"\$\$\{?[A-Z_]*(PASSWORD|KEY|AUTH|SECRET|TOKEN)", segment):
                    first = segment.split()[0] if segment.split() else ""
                    assert first in _BUILTINS, f"{name}: {first} gets a secret: {segment}"


@pytest.mark.parametrize("secret", SECRETS)
def test_every_secret_is_guarded_unset_and_empty(compose: dict[str, Any], secret: str) -> None:
    for value in (None, ""):
        env = _secret_env()
        if value is None:
            del env[secret]
        else:
            env[secret] = value
        with pytest.raises(UnsetVariableError, match=secret):
            _interpolate(compose, env)


def test_flower_needs_a_password_and_takes_the_broker_from_its_environment(
    compose: dict[str, Any],
) -> None:
    # The issue: FLOWER_BASIC_AUTH=admin: passed `${FLOWER_BASIC_AUTH:?}`.
    env = {**_secret_env(), "FLOWER_USER": "admin", "FLOWER_PASSWORD": ""}
    with pytest.raises(UnsetVariableError, match="FLOWER_PASSWORD"):
        _interpolate(compose, env)
    env = {**_secret_env(), "FLOWER_BASIC_AUTH": "admin:", "FLOWER_PASSWORD": ""}
    with pytest.raises(UnsetVariableError, match="FLOWER_PASSWORD"):
        _interpolate(compose, env)
    flower = _interpolate(compose, _secret_env())["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == (
        "sentinel-flower_user-value:sentinel-flower_password-value"
    )
    broker = flower["environment"]["CELERY_BROKER_URL"]
    assert broker == "redis://:sentinel-redis_password-value@redis:6379/0"
    assert flower["command"][0] == "celery", "no shell between compose and Flower"


def test_the_web_pages_are_published_on_the_hosts_loopback_only(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert web["command"] == ["cxr-screen", "web"]
    assert web["ports"]
    assert all(str(port).startswith("127.0.0.1:") for port in web["ports"])
