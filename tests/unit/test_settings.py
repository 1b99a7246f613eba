from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import ConfigError, Settings, load


def test_defaults() -> None:
    s = load(environ={})
    assert s.host == "127.0.0.1"
    assert s.port == 8080
    assert s.workers == 1
    assert s.storage == "local"
    assert s.data_dir == Path("./hubgate-data")
    assert s.database.url == f"sqlite:///{(Path('./hubgate-data') / 'hubgate.db').resolve()}"
    st = s.storage_settings
    assert st.backend == "local" and st.local_root == Path("./hubgate-data/store") and st.s3 is None
    assert s.public_url is None
    assert s.xet == "on"  # HUBGATE_XET=off turns the Xet build and the Xet read protocol off


def test_environment(tmp_path: Path) -> None:
    s = load(environ={
        "HUBGATE_PORT": "9000", "HUBGATE_HOST": "0.0.0.0", "HUBGATE_DATA_DIR": str(tmp_path),
        "HUBGATE_DATABASE_URL": "postgresql+psycopg://u@db/hubgate", "HUBGATE_STORAGE_DIR": str(tmp_path / "blobs"),
        "HUBGATE_LOG_LEVEL": "debug", "HUBGATE_PUBLIC_URL": "https://hub.example.com/",
        "UNRELATED": "ignored", "HF_HOME": "/x",
    })
    assert (s.port, s.host, s.log_level) == (9000, "0.0.0.0", "debug")
    assert s.database.url == "postgresql+psycopg://u@db/hubgate"
    assert s.storage_settings.local_root == tmp_path / "blobs"
    assert s.public_url == "https://hub.example.com"  # trailing slash removed


def test_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text('[hubgate]\nport = 9100\nhost = "10.0.0.1"\nworkers = 4\n')
    s = load(cfg, environ={})
    assert (s.port, s.host, s.workers) == (9100, "10.0.0.1", 4)


def test_toml_file_without_section(tmp_path: Path) -> None:
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text("port = 9200\n")
    assert load(cfg, environ={}).port == 9200


def test_config_path_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text("[hubgate]\nport = 9300\n")
    assert load(environ={"HUBGATE_CONFIG": str(cfg)}).port == 9300


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text('[hubgate]\nport = 9100\nhost = "10.0.0.1"\n')
    s = load(cfg, environ={"HUBGATE_PORT": "9999"})
    assert s.port == 9999
    assert s.host == "10.0.0.1"  # not overridden: the file's value


def test_explicit_overrides_beat_environment(tmp_path: Path) -> None:
    s = load(environ={"HUBGATE_PORT": "9999", "HUBGATE_HOST": "0.0.0.0"}, port=1234)
    assert s.port == 1234 and s.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"HUBGATE_PORT": "abc"}, "HUBGATE_PORT"),
        ({"HUBGATE_PORT": "70000"}, "HUBGATE_PORT"),
        ({"HUBGATE_PORT": "-1"}, "HUBGATE_PORT"),
        ({"HUBGATE_WORKERS": "0"}, "HUBGATE_WORKERS"),
        ({"HUBGATE_STORAGE": "ftp"}, "HUBGATE_STORAGE"),
        ({"HUBGATE_LOG_LEVEL": "loud"}, "HUBGATE_LOG_LEVEL"),
        ({"HUBGATE_S3_PRESIGN_TTL_SECONDS": "5"}, "HUBGATE_S3_PRESIGN_TTL_SECONDS"),
        ({"HUBGATE_S3_SERVE": "teleport"}, "HUBGATE_S3_SERVE"),
        ({"HUBGATE_PUBLIC_URL": "not a url"}, "HUBGATE_PUBLIC_URL"),
        ({"HUBGATE_REF_CACHE_SECONDS": "soon"}, "HUBGATE_REF_CACHE_SECONDS"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(environ=env)
    assert str(info.value).startswith(f"{setting}:")


def test_bad_value_in_file_names_the_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text('[hubgate]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match="HUBGATE_PORT"):
        load(cfg, environ={})


def test_unknown_environment_variable() -> None:
    with pytest.raises(ConfigError, match="HUBGATE_PROT"):
        load(environ={"HUBGATE_PROT": "8080"})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text("[hubgate]\nprot = 8080\n")
    with pytest.raises(ConfigError, match="prot"):
        load(cfg, environ={})


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HUBGATE_CONFIG"):
        load(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[hubgate\nport = ")
    with pytest.raises(ConfigError, match="HUBGATE_CONFIG"):
        load(bad, environ={})
    not_table = tmp_path / "scalar.toml"
    not_table.write_text('hubgate = "x"\n')
    with pytest.raises(ConfigError, match="HUBGATE_CONFIG"):
        load(not_table, environ={})


def test_s3_requires_a_bucket() -> None:
    with pytest.raises(ConfigError, match="HUBGATE_S3_BUCKET"):
        load(environ={"HUBGATE_STORAGE": "s3"})
    with pytest.raises(ConfigError, match="HUBGATE_S3_BUCKET"):
        load(environ={"HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": ""})


def test_s3_settings_are_handed_down() -> None:
    s = load(environ={
        "HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": "models", "HUBGATE_S3_PREFIX": "hub/",
        "HUBGATE_S3_ENDPOINT_URL": "http://minio:9000", "HUBGATE_S3_PUBLIC_ENDPOINT_URL": "https://s3.example.com",
        "HUBGATE_S3_REGION": "eu-west-1", "HUBGATE_S3_ACCESS_KEY_ID": "AK", "HUBGATE_S3_SECRET_ACCESS_KEY": "SK",
        "HUBGATE_S3_PRESIGN_TTL_SECONDS": "600",
    })
    st = s.storage_settings
    assert st.backend == "s3" and st.local_root is None
    assert st.s3 is not None
    assert (st.s3.bucket, st.s3.prefix, st.s3.endpoint_url, st.s3.public_endpoint_url) == (
        "models", "hub/", "http://minio:9000", "https://s3.example.com")
    assert (st.s3.region, st.s3.access_key_id, st.s3.secret_access_key, st.s3.presign_ttl_seconds) == (
        "eu-west-1", "AK", "SK", 600)


def test_comma_separated_lists() -> None:
    s = load(environ={"HUBGATE_LICENSE_ALLOWLIST": "mit, apache-2.0,,", "HUBGATE_AUTO_APPROVE_ORGS": ""})
    assert s.license_allowlist == ["mit", "apache-2.0"]
    assert s.auto_approve_orgs == []
    assert s.policy.license_allowlist == ("mit", "apache-2.0")


def test_upstream_url() -> None:
    assert load(environ={}).upstream_url == "https://huggingface.co"
    assert load(environ={"HUBGATE_UPSTREAM_URL": ""}).upstream_url is None  # a sealed side
    assert load(environ={"HUBGATE_UPSTREAM_URL": "http://outer:8080/"}).upstream_url == "http://outer:8080"
    with pytest.raises(ConfigError, match="HUBGATE_UPSTREAM_URL"):
        load(environ={"HUBGATE_UPSTREAM_URL": "not a url"})


def test_settings_are_frozen() -> None:
    s = load(environ={})
    with pytest.raises(Exception):
        s.port = 1  # type: ignore[misc]


def test_settings_ignore_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only load() reads the environment; Settings() itself does not (one source of truth)."""
    monkeypatch.setenv("HUBGATE_PORT", "1234")
    assert Settings().port == 8080
    assert load().port == 1234
