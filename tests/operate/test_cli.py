"""The ``hubgate`` CLI as an operator meets it: remote mode against a live server with a token of each role,
``--json``, ``requests show``, ``--wait``, the exit-code table, one-line errors, a fast ``--help``, progress."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import HUBGATE, free_port, run, write_folder

pytestmark = pytest.mark.integration


def test_help_is_fast_and_loads_nothing_heavy() -> None:
    code = ("import sys, time; t = time.perf_counter(); from api.cli import build_parser; build_parser(); "
            "heavy = sorted(m for m in ('fastapi', 'sqlalchemy', 'cryptography', 'boto3', 'uvicorn', 'pydantic_settings') "
            "if m in sys.modules); print(heavy, time.perf_counter() - t)")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stdout.startswith("[]"), probe.stdout + probe.stderr
    times = []
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run([HUBGATE, "--help"], capture_output=True, text=True, timeout=60)
        times.append(time.perf_counter() - started)
        assert out.returncode == 0 and "exit codes" in out.stdout
    print(f"hubgate --help: best {min(times):.3f}s of {[round(t, 3) for t in times]}")
    assert min(times) < 1.5, times  # 0.5 s is the goal on an idle machine; CI boxes are loaded
    version = subprocess.run([HUBGATE, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "hubgate 0.1.0"


def test_config_is_accepted_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "hubgate.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-config"}"\nupstream_url = ""\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}
    listed = run(env, "requests", "--config", str(config), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
    assert (tmp_path / "from-config" / "hubgate.db").exists()


def test_failures_are_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad_dir = run({**env, "HUBGATE_DATA_DIR": str(blocker / "data")}, "requests")
    assert bad_dir.returncode == 2 and "HUBGATE_DATA_DIR" in bad_dir.stderr, bad_dir.stderr
    bad_db = run({**env, "HUBGATE_DATA_DIR": str(tmp_path / "d"),
                  "HUBGATE_DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/x.db"}, "requests")
    assert bad_db.returncode == 2 and "HUBGATE_DATABASE_URL" in bad_db.stderr, bad_db.stderr
    bad_setting = run({**env, "HUBGATE_LOG_LEVEL": "loud"}, "requests")
    assert bad_setting.returncode == 2 and "HUBGATE_LOG_LEVEL" in bad_setting.stderr
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run({**env, "HUBGATE_DATA_DIR": str(tmp_path / "p"), "HUBGATE_UPSTREAM_URL": ""},
                    "serve", "--port", str(port), timeout=60)
    assert taken.returncode == 2 and "HUBGATE_PORT" in taken.stderr and "in use" in taken.stderr, taken.stderr
    for result in (bad_dir, bad_db, bad_setting, taken):
        assert "Traceback" not in result.stderr
        assert len([line for line in result.stderr.splitlines() if line.startswith("hubgate:")]) == 1, result.stderr


def _token(served, role: str, name: str) -> str:  # type: ignore[no-untyped-def]
    made = served.cli("--local", "token", "create", "--role", role, "--name", name)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture
def connected(serve, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A hubgate with the fake Hub as its upstream and the worker in process."""
    from fakes.fake_hub import FakeHub

    hub = FakeHub(page_size=3).start()
    try:
        s = serve(upstream_url=hub.url, upstream_allow_private="true",
                  upstream_redirect_hosts=hub.cdn_url.split("://", 1)[1])
        s.extra["hub"] = hub
        yield s
    finally:
        hub.stop()


def test_remote_mode_with_a_token_of_each_role(connected, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = connected
    hub = s.extra["hub"]
    hub.create_repo("acme/remote-model", {"README.md": b"---\nlicense: mit\n---\n# m\n", "config.json": b"{}\n"})
    admin = _token(s, "admin", "ops-admin")
    remote = {k: v for k, v in s.env.items() if k != "HUBGATE_DATA_DIR"}  # no local database on this "laptop"
    remote.update({"HUBGATE_URL": s.url, "HUBGATE_DATA_DIR": str(tmp_path / "laptop")})

    def cli(token: str | None, *argv: str, via_hf_token: bool = False) -> subprocess.CompletedProcess[str]:
        env = dict(remote)
        if token is not None:
            env["HF_TOKEN" if via_hf_token else "HUBGATE_TOKEN"] = token
        return run(env, *argv)

    made = cli(admin, "token", "create", "--role", "requester", "--name", "rita")
    assert made.returncode == 0, made.stderr
    requester = made.stdout.strip().splitlines()[-1]
    reader = cli(admin, "tokens", "create", "--role", "reader", "--name", "rolf").stdout.strip().splitlines()[-1]

    asked = cli(requester, "request", "acme/remote-model", "--reason", "eval", via_hf_token=True)
    assert asked.returncode == 0, asked.stderr
    pk = json.loads(asked.stdout)["id"]
    assert json.loads(asked.stdout)["requester"] == "rita"  # as the token's user, not cli:root

    denied = cli(reader, "request", "acme/remote-model")
    assert denied.returncode == 5 and "403" in denied.stderr, denied.stderr
    not_admin = cli(requester, "approve", str(pk))
    assert not_admin.returncode == 5, not_admin.stderr
    no_token = cli(None, "requests")
    assert no_token.returncode == 2 and "HUBGATE_TOKEN" in no_token.stderr, no_token.stderr

    mine = json.loads(cli(requester, "requests", "--json").stdout)
    assert [r["id"] for r in mine] == [pk]
    shown = cli(requester, "requests", "show", str(pk))
    assert shown.returncode == 0 and f"request {pk}: model:acme/remote-model" in shown.stdout, shown.stdout
    assert "findings" in shown.stdout

    approved = cli(admin, "approve", str(pk), "--wait", "--timeout", "120", "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["state"] == "available"
    assert "request %d" % pk in approved.stderr  # its progress was shown while waiting

    repos = json.loads(cli(reader, "repos", "list", "--json").stdout)
    assert [(r["repo_id"], r["state"]) for r in repos] == [("acme/remote-model", "available")]
    tokens = json.loads(cli(admin, "tokens", "list", "--json").stdout)
    assert {t["name"] for t in tokens} >= {"ops-admin", "rita", "rolf"} and all(t.get("token") is None for t in tokens)
    assert cli(reader, "tokens", "list").returncode == 5
    granted = cli(admin, "grants", "add", "acme/remote-model", "--group", "ml")
    assert granted.returncode == 0 and "group:ml" in granted.stdout, granted.stderr
    assert json.loads(cli(admin, "grants", "list", "--json").stdout)[0]["subject"] == "group:ml"
    audit = cli(admin, "audit", "export")
    actions = [json.loads(line)["action"] for line in audit.stdout.splitlines()]
    assert "request.approve" in actions and "grant.add" in actions, actions
    rolf = next(t["token_id"] for t in tokens if t["name"] == "rolf")
    assert cli(admin, "tokens", "revoke", rolf).returncode == 0
    assert cli(reader, "repos", "list").returncode == 5  # revoked
    verify = cli(admin, "audit", "verify")
    assert verify.returncode == 2 and "--local" in verify.stderr


def test_progress_is_a_live_bar_on_a_terminal_and_lines_in_a_log(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "big", {"weights.bin": os.urandom(48 * 1024 * 1024), "README.md": b"# x\n"})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")},
           "HUBGATE_DATA_DIR": str(tmp_path / "d"), "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "warning"}
    logged = run(env, "import", str(folder), "--repo", "acme/progress")
    assert logged.returncode == 0, logged.stderr
    lines = [line for line in logged.stderr.splitlines() if line.startswith("import: ")]
    assert any("copying" in line and "/ 50.3 MB" in line for line in lines), logged.stderr
    done = [line for line in lines if line.endswith("2/2 files") and " in " in line]
    assert done and "50.3 MB / 50.3 MB 100%" in done[-1], logged.stderr  # the bytes are counted as they are read
    assert "\r" not in logged.stderr

    main, child = pty.openpty()
    proc = subprocess.Popen([HUBGATE, "verify"], env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    out = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(main)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "\r\x1b[2K" in text and "verify: verifying" in text and "MB/s" in text, text


def test_write_routes_are_refused_hub_style_and_hf_clients_show_it(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    s = serve()
    api = HfApi(endpoint=s.url, token=False)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(HfHubHTTPError) as upload:
        api.upload_file(path_or_fileobj=str(tmp_path / "f.txt"), path_in_repo="f.txt", repo_id="acme/up")
    assert upload.value.response.status_code == 403
    assert "read-only mirror" in str(upload.value)
    with pytest.raises(HfHubHTTPError) as create:
        api.create_repo("acme/new")
    assert "read-only mirror" in str(create.value)
    hf = Path(sys.executable).with_name("hf")
    if hf.exists():
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, "HF_ENDPOINT": s.url,
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "hg_not_a_real_token", "NO_PROXY": "127.0.0.1"}
        cmd = subprocess.run([str(hf), "upload", "acme/up", str(tmp_path / "f.txt")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert cmd.returncode != 0 and "read-only mirror" in cmd.stdout + cmd.stderr, cmd.stdout + cmd.stderr


def test_free_port_helper_is_free() -> None:
    assert free_port() > 0
