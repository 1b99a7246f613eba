"""README.md stays true: its settings table matches the Settings model (name, default, meaning), and
CI installs and tests exactly as the README's test command says."""

import re
import shlex
from pathlib import Path

from api.settings import reference_rows

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _table_rows() -> dict[str, tuple[str, str]]:
    block = README.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| `(HUBGATE_[A-Z0-9_]+)` \| (?:`([^`]*)`)? *\| (.*) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2) or "", m.group(3).strip())
    return rows


def test_settings_table_lists_every_setting_with_its_default_and_meaning() -> None:
    expected = {name: (default, meaning.replace("|", "\\|")) for name, default, meaning in reference_rows()}
    expected["HUBGATE_CONFIG"] = ("", "TOML settings file")
    assert _table_rows() == expected


def _readme_test_command() -> list[list[str]]:
    """The fenced command under "Run the tests", split into its ``&&`` steps."""
    section = README.split("Run the tests", 1)[1]
    command = section.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    return [shlex.split(step) for step in command.split("&&")]


def _ci_commands() -> list[list[str]]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_ci_installs_what_the_readme_installs_and_runs_its_test_command() -> None:
    venv, install, *others, test = _readme_test_command()
    assert venv == ["python3", "-m", "venv", ".venv"]
    ci = _ci_commands()
    assert venv in ci
    packages = [a for a in install if not a.startswith("-") and a not in (".venv/bin/pip", "install")]
    ci_install = next(c for c in (" ".join(cmd) for cmd in ci) if "pip install" in c)
    assert all(pkg in ci_install for pkg in packages), (packages, ci_install)
    for step in others:  # other set-up steps (the vLLM venv), each a command of CI's, before the tests
        assert step in ci and ci.index(step) < ci.index(test), step
    assert test in ci  # the README's test command, as a command of its own (not in a comment)
