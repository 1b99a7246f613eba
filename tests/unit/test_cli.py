from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlmodel import Session

from api.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, EXIT_VERIFY, main
from registry import catalog
from registry.db import make_engine
from registry.gitobjects import blob_oid
from registry.settings import DatabaseSettings
from registry.types import RepoRef

from helpers.content import safetensors_bytes, write_tree

FILES = {"config.json": b"{}", "model.safetensors": safetensors_bytes(256), "tokenizer/vocab.txt": b"a\n"}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("HUBGATE_"):
            monkeypatch.delenv(key)
    data = tmp_path / "data"
    monkeypatch.setenv("HUBGATE_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)  # a stray default ./hubgate-data would land in tmp_path
    return data


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", FILES)


def published_commit(data_dir: Path, repo: RepoRef, revision: str = "main") -> str:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{data_dir / 'hubgate.db'}"))
    try:
        with Session(engine) as session:
            return catalog.resolve(session, repo, revision).commit
    finally:
        engine.dispose()


def test_import_succeeds(data_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(folder), "--repo", "acme/tiny"]) == EXIT_OK
    out = capsys.readouterr().out
    commit = published_commit(data_dir, RepoRef.parse("model", "acme/tiny"))
    assert f"imported: model acme/tiny @ {commit} (3 files, 260 bytes); refs: main" in out
    assert (data_dir / "store" / "hubgate-layout").read_bytes() == b"1\n"

    assert main(["import", str(folder), "--repo", "acme/tiny"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"already present: model acme/tiny @ {commit}" in out
    assert "refs: none moved" in out


def test_import_dataset_with_revision_and_refs(data_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rev = "f" * 40
    code = main(["import", str(folder), "--repo", "acme/data", "--repo-type", "dataset", "--revision", rev,
                 "--ref", "main", "--ref", "refs/tags/v1"])
    assert code == EXIT_OK, capsys.readouterr().err
    ds = RepoRef.parse("dataset", "acme/data")
    assert published_commit(data_dir, ds, "v1") == rev
    assert published_commit(data_dir, ds, "main") == rev
    assert "refs: main, v1" in capsys.readouterr().out


def test_import_with_config_file(tmp_path: Path, data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBGATE_DATA_DIR")
    other = tmp_path / "from-config"
    cfg = tmp_path / "hubgate.toml"
    cfg.write_text(f'[hubgate]\ndata_dir = "{other}"\n')
    assert main(["--config", str(cfg), "import", str(folder), "--repo", "acme/tiny"]) == EXIT_OK
    assert (other / "hubgate.db").is_file()
    assert not data_dir.exists()


@pytest.mark.parametrize(("value", "setting"), [("abc", "HUBGATE_PORT"), ("99999", "HUBGATE_PORT")])
def test_bad_port_is_a_config_error(data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], value: str, setting: str) -> None:
    monkeypatch.setenv("HUBGATE_PORT", value)
    assert main(["import", str(folder), "--repo", "acme/tiny"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "configuration error" in err and setting in err
    assert not data_dir.exists()  # nothing was opened


def test_serve_with_bad_port_is_a_config_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUBGATE_PORT", "not-a-port")
    assert main(["serve"]) == EXIT_USAGE
    assert "HUBGATE_PORT" in capsys.readouterr().err


def test_unknown_setting_is_a_config_error(data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUBGATE_STORAGE_PATH", "/x")
    assert main(["import", str(folder), "--repo", "acme/tiny"]) == EXIT_USAGE
    assert "HUBGATE_STORAGE_PATH" in capsys.readouterr().err


def test_s3_without_bucket(data_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUBGATE_STORAGE", "s3")
    assert main(["import", str(folder), "--repo", "acme/tiny"]) == EXIT_USAGE
    assert "HUBGATE_S3_BUCKET" in capsys.readouterr().err


def test_invalid_repo_id(data_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(folder), "--repo", "acme--tiny"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Invalid repo id" in err and "acme--tiny" in err
    assert not data_dir.exists()


def test_invalid_revision(data_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(folder), "--repo", "acme/tiny", "--revision", "main"]) == EXIT_USAGE
    assert "Invalid commit 'main'" in capsys.readouterr().err


def test_missing_folder(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "does-not-exist"
    assert main(["import", str(missing), "--repo", "acme/tiny"]) in (EXIT_FAILURE, EXIT_USAGE)
    assert "does-not-exist" in capsys.readouterr().err


def test_symlink_escape(data_dir: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    (folder / "leak").symlink_to(tmp_path / "secret")
    assert main(["import", str(folder), "--repo", "acme/tiny"]) in (EXIT_FAILURE, EXIT_USAGE)
    assert "leak" in capsys.readouterr().err


def test_corrupt_cache_blob_is_a_verification_failure(data_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "blobs" / blob_oid(b"{}")).write_bytes(b"[]")  # named after other content
    (snap / "config.json").symlink_to(f"../../blobs/{blob_oid(b'{}')}")
    assert main(["import", str(snap), "--repo", "acme/tiny"]) == EXIT_VERIFY
    err = capsys.readouterr().err
    assert "verification failed" in err and "config.json" in err


def test_conflict_is_an_operational_failure(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rev = "b" * 40
    a = write_tree(tmp_path / "a", {"x.txt": b"1"})
    b = write_tree(tmp_path / "b", {"x.txt": b"2"})
    assert main(["import", str(a), "--repo", "acme/tiny", "--revision", rev]) == EXIT_OK
    assert main(["import", str(b), "--repo", "acme/tiny", "--revision", rev]) == EXIT_FAILURE
    assert "already published with different content" in capsys.readouterr().err


def test_usage_errors_exit_2(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["import"], ["import", "x"], ["frobnicate"], ["import", "x", "--repo", "a/b", "--repo-type", "space"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
