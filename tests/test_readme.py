"""README.md stays true: its settings table matches the Settings model, and CI runs its test command."""

import re
from pathlib import Path

from api.settings import reference_rows

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _table_rows() -> dict[str, str]:
    block = README.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| `(HUBGATE_[A-Z0-9_]+)` \| (?:`([^`]*)`)? *\|", line)
        if m:
            rows[m.group(1)] = m.group(2) or ""
    return rows


def test_settings_table_lists_every_setting_with_its_default() -> None:
    expected = {name: default for name, default, _ in reference_rows()}
    expected["HUBGATE_CONFIG"] = ""
    assert _table_rows() == expected


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = ".venv/bin/python -m pytest -n 2"
    assert command in README
    assert command in ci
