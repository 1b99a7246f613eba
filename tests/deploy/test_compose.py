"""deploy/compose: pinned images, restart policies, readiness healthchecks, a least-privilege MinIO user,
and credentials that survive any character.

The compose file is read with PyYAML and its interpolation checked against Compose's rules; where the
pinned `docker-compose` binary is installed (deploy/tools/install-test-tools.sh), `docker-compose config`
interpolates it for real with passwords full of `$`, `#`, spaces and quotes. minio/init.sh runs against a
stand-in `mc` that records its arguments; hubgate-init's command runs against hubgate itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .tools import COMPOSE_DIR, tool

COMPOSE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
INIT_SH = COMPOSE_DIR / "minio" / "init.sh"
POLICY = COMPOSE_DIR / "minio" / "policy.json"
HUBGATE_SERVICES = ("hubgate-init", "api", "worker")
SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "HUBGATE_S3_SECRET_ACCESS_KEY")
# Compose interpolation: $$ is a literal $; ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}
_DOLLAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+][^}]*)?\}|\$(?P<bare>[A-Za-z_]\w*)?")
NASTY = {  # values a generated password may hold; none contains ' (see .env.example)
    "POSTGRES_PASSWORD": 'pg$$pa#ss ${HOME} "q" $USER end',
    "MINIO_ROOT_USER": "minio-root",
    "MINIO_ROOT_PASSWORD": "r00t$pass #word\\n",
    "HUBGATE_S3_ACCESS_KEY_ID": "hubgate",
    "HUBGATE_S3_SECRET_ACCESS_KEY": "s3 $ecret #x; `id` $(id)",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string in the document with its path (keys joined by '.')."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


# --- the file as text: images, restarts, healthchecks, interpolation ----------------------------------------

def test_every_image_is_pinned_to_an_exact_release(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = re.sub(r"\$\{HUBGATE_IMAGE:-([^}]+)\}", r"\1", service["image"])
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest", (name, image)
        # an exact version: 16.10-bookworm, RELEASE.2025-04-22T22-12-26Z, 0.1.0; not 16 or 3.11
        assert re.search(r"\d+\.\d+|\d{4}-\d\d-\d\dT", tag), (name, image)


def test_every_service_has_a_restart_policy(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        one_shot = name.endswith("-init")
        assert service.get("restart") == ("on-failure" if one_shot else "unless-stopped"), name


def test_the_api_is_healthy_only_when_ready_and_everything_waits_for_what_it_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("postgres", "minio"):
        assert services[name]["healthcheck"]["test"]
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "minio-init": {"condition": "service_completed_successfully"},
            "hubgate-init": {"condition": "service_completed_successfully"},
        }
    assert services["api"]["command"] == ["serve"] and services["worker"]["command"] == ["worker"]


def test_stop_grace_period_covers_the_shutdown_timeout(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        service = compose["services"][name]
        timeout = float(service["environment"]["HUBGATE_SHUTDOWN_TIMEOUT_SECONDS"])
        grace = int(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))
        assert grace >= timeout + 5, name  # Compose's default is 10 s, then SIGKILL


def test_interpolation_only_uses_variables_from_the_env_file_and_secrets_only_as_whole_values(compose: dict[str, Any]) -> None:
    documented = set(env_example()) | {"HUBGATE_IMAGE"}
    for path, value in strings(compose):
        for m in _DOLLAR.finditer(value):
            assert m.group(0) != "$" and not m.group("bare"), f"{path}: a bare $ is interpolated by Compose: use $$"
            name = m.group("name")
            if name is None:
                continue
            assert name in documented or (m.group("op") or "").startswith(":-"), f"{path}: ${name} not in .env.example"
            if any(s in name for s in ("PASSWORD", "SECRET")):
                # a secret reaches containers as a whole environment value, never spliced into a command,
                # a URL or a shell string (where its characters would mean something)
                assert re.search(r"(^|\.)(environment|x-[\w-]*environment)\.\w+$", path) and m.group(0) == value, path
                assert (m.group("op") or "").startswith(":?"), f"{path}: a missing secret must stop Compose"


def test_env_example_single_quotes_every_secret() -> None:
    for name, value in env_example().items():
        if any(s in name for s in ("PASSWORD", "SECRET", "USER", "KEY_ID")):
            assert re.fullmatch(r"'[^']*'", value), f"{name}: single-quote it (Compose expands $ otherwise)"


def test_hubgate_uses_its_own_minio_user_never_the_root_credentials(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in HUBGATE_SERVICES:
        env = services[name]["environment"]
        assert not [k for k in env if k.startswith("MINIO_ROOT")], name
        assert "MINIO_ROOT" not in json.dumps(env), name
        assert env["HUBGATE_S3_ACCESS_KEY_ID"] == "${HUBGATE_S3_ACCESS_KEY_ID:?set HUBGATE_S3_ACCESS_KEY_ID in .env}"
        assert "@" not in env["HUBGATE_DATABASE_URL"].split("//", 1)[1].split("/", 1)[0].replace("hubgate@", "")
        assert env["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    holders = {n for n, s in services.items() if any(k.startswith("MINIO_ROOT") for k in s.get("environment", {}))}
    assert holders == {"minio", "minio-init"}


def test_hubgate_settings_in_compose_are_known(compose: dict[str, Any]) -> None:
    from api.settings import Settings

    known = {f"HUBGATE_{n.upper()}" for n in Settings.model_fields}
    for name in HUBGATE_SERVICES:
        unknown = {k for k in compose["services"][name]["environment"] if k.startswith("HUBGATE_")} - known
        assert not unknown, (name, unknown)


# --- the MinIO user's policy and the script that makes it ---------------------------------------------------

def test_minio_policy_reaches_the_hubgate_bucket_only(compose: dict[str, Any]) -> None:
    policy = json.loads(POLICY.read_text())
    bucket = compose["services"]["api"]["environment"]["HUBGATE_S3_BUCKET"]
    assert compose["services"]["minio-init"]["environment"]["BUCKET"] == bucket
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        for resource in statement["Resource"]:
            assert resource in ("arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"), resource
        actions |= set(statement["Action"])
    assert not [a for a in actions if "*" in a or not a.startswith("s3:")]
    assert not [a for a in actions if re.search(r"Policy|Acl|Bucket(Versioning|Lifecycle|Tagging)|CreateBucket|DeleteBucket", a)]
    # what hubgate's S3 driver does: head/list the bucket, objects, multipart uploads and their cleanup
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
            "s3:ListBucketMultipartUploads", "s3:ListMultipartUploadParts"} <= actions


def _fake_mc(tmp_path: Path, *, attached_already: bool) -> tuple[Path, Path]:
    log = tmp_path / "mc.log"
    mc = tmp_path / "bin" / "mc"
    mc.parent.mkdir()
    mc.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
entry = {{"args": args}}
if args[:3] == ["admin", "policy", "create"]:
    entry["policy"] = json.load(open(args[5]))
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(entry) + "\\n")
if args[:3] == ["admin", "policy", "attach"] and {attached_already!r}:
    sys.exit(1)
if args[:3] == ["admin", "user", "info"]:
    print("AccessKey: hubgate\\nPolicyName: hubgate-hubgate")
""")
    mc.chmod(0o755)
    return mc.parent, log


@pytest.mark.parametrize("attached_already", [False, True])
def test_minio_init_creates_bucket_user_and_policy_with_the_exact_credentials(tmp_path: Path, attached_already: bool) -> None:
    bin_dir, log = _fake_mc(tmp_path, attached_already=attached_already)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "BUCKET": "hubgate", **NASTY}
    proc = subprocess.run(["/bin/sh", str(INIT_SH)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    args = [c["args"] for c in calls]
    assert args[0] == ["alias", "set", "local", "http://minio:9000", NASTY["MINIO_ROOT_USER"], NASTY["MINIO_ROOT_PASSWORD"]]
    assert ["mb", "--ignore-existing", "local/hubgate"] in args
    assert ["admin", "user", "add", "local", "hubgate", NASTY["HUBGATE_S3_SECRET_ACCESS_KEY"]] in args
    assert ["admin", "policy", "attach", "local", "hubgate-hubgate", "--user", "hubgate"] in args
    (created,) = [c for c in calls if c["args"][:3] == ["admin", "policy", "create"]]
    assert created["args"][3:5] == ["local", "hubgate-hubgate"]
    resources = {r for s in created["policy"]["Statement"] for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::hubgate", "arn:aws:s3:::hubgate/*"}
    assert not list(tmp_path.glob("hubgate-policy.*"))  # its temp file is gone
    assert NASTY["MINIO_ROOT_PASSWORD"] not in proc.stdout + proc.stderr


def test_minio_init_refuses_a_missing_secret(tmp_path: Path) -> None:
    bin_dir, _ = _fake_mc(tmp_path, attached_already=False)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **{k: v for k, v in NASTY.items() if k != "MINIO_ROOT_PASSWORD"}}
    proc = subprocess.run(["/bin/sh", str(INIT_SH)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "MINIO_ROOT_PASSWORD" in proc.stderr


def test_hubgate_init_command_migrates_and_creates_both_keys(compose: dict[str, Any], tmp_path: Path) -> None:
    """The one-shot service's command, run against this checkout (SQLite and a local store here)."""
    entrypoint = compose["services"]["hubgate-init"]["entrypoint"]
    assert entrypoint[:2] == ["python", "-c"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}
    env.update({"HUBGATE_DATA_DIR": str(tmp_path / "data"), "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "warning"})
    proc = subprocess.run([sys.executable, "-c", entrypoint[2]], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "data" / "signing-key.pem").read_bytes().startswith(b"-----BEGIN")
    assert (tmp_path / "data" / "secret.key").stat().st_size > 0
    assert (tmp_path / "data" / "hubgate.db").exists()


# --- the real interpolation ------------------------------------------------------------------------------

def _config(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("docker-compose"), "-f", str(COMPOSE), "--env-file", str(env_file), *args],
                          capture_output=True, text=True, timeout=60, cwd=env_file.parent,
                          env={k: v for k, v in os.environ.items() if k not in NASTY and not k.startswith("COMPOSE_")})


def test_docker_compose_config_keeps_every_character_of_the_credentials(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    # written the way .env.example tells: single quotes
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in NASTY.items()))
    proc = _config(env_file, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]

    def value(service: str, name: str) -> str:
        return services[service]["environment"][name].replace("$$", "$")  # config's output escapes $ again

    for service in HUBGATE_SERVICES:
        assert value(service, "PGPASSWORD") == NASTY["POSTGRES_PASSWORD"]
        assert value(service, "HUBGATE_S3_SECRET_ACCESS_KEY") == NASTY["HUBGATE_S3_SECRET_ACCESS_KEY"]
        assert value(service, "HUBGATE_DATABASE_URL") == "postgresql+psycopg://hubgate@postgres:5432/hubgate"
    assert value("postgres", "POSTGRES_PASSWORD") == NASTY["POSTGRES_PASSWORD"]
    assert value("minio", "MINIO_ROOT_PASSWORD") == NASTY["MINIO_ROOT_PASSWORD"]
    assert value("minio-init", "MINIO_ROOT_PASSWORD") == NASTY["MINIO_ROOT_PASSWORD"]
    for name in ("api", "worker", "hubgate-init"):
        assert services[name]["image"] == "hubgate:0.1.0"
        assert services[name]["restart"] in ("unless-stopped", "on-failure")


def test_docker_compose_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}='{v}'\n" for k, v in NASTY.items() if k != "POSTGRES_PASSWORD"))
    proc = _config(env_file, "config", "--quiet")
    assert proc.returncode != 0 and "set POSTGRES_PASSWORD in .env" in proc.stderr


def test_env_example_as_written_is_read_literally(tmp_path: Path) -> None:
    example = env_example()
    proc = _config(ENV_EXAMPLE, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)["services"]["api"]["environment"]
    assert env["PGPASSWORD"].replace("$$", "$") == example["POSTGRES_PASSWORD"].strip("'")
    assert shlex.split(example["HUBGATE_S3_SECRET_ACCESS_KEY"])[0] == env["HUBGATE_S3_SECRET_ACCESS_KEY"]
