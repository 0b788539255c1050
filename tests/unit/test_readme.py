"""The README stays true: its configuration table lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

from worker.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `(CXR_[A-Z_]+)` \|", README.read_text(), re.MULTILINE))
    settings = set(Settings.variable_names())
    assert settings - documented == set(), "add these to the README's configuration table"
    assert documented - settings == set(), "the README documents settings that do not exist"


def test_readme_opens_with_the_two_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    assert [b.strip() for b in blocks[:2]] == ["./deploy/start.sh", "./deploy/test.sh"]
