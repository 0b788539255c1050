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


def test_every_relative_link_and_picture_exists() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    assert local, "the README links to files of the repository"
    missing = [t for t in local if not (README.parent / t).exists()]
    assert missing == [], f"the README links to files that are not in the repository: {missing}"
