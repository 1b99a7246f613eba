"""Fixtures of the Xet tests: hubgate with HUBGATE_XET=on over the local store and S3 (moto; Ceph RGW when
its tools are installed), publishing the shared fixture repos plus two large models (a base and a
fine-tune that shares most of its bytes) through the publish-time builder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.content import FixtureRepo, fixture_repo
from helpers.hubgate import HubgateServer

from tests.xet.support import big_models, start_xet_hubgate


@pytest.fixture(scope="session")
def xet_repos(tmp_path_factory: pytest.TempPathFactory, fixture_repo_by_key: dict[str, FixtureRepo]
              ) -> list[FixtureRepo]:
    root = tmp_path_factory.mktemp("xet-repos")
    big, tuned = big_models(root)
    return [fixture_repo_by_key["tiny"], fixture_repo_by_key["parquet"],
            fixture_repo("big", "model", "acme/big", big), fixture_repo("big-ft", "model", "acme/big-ft", tuned)]


@pytest.fixture(scope="session", params=["local", "s3-redirect", "s3-proxy", "s3-redirect-rgw", "s3-proxy-rgw"])
def xet_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            xet_repos: list[FixtureRepo]) -> Iterator[HubgateServer]:
    """hubgate with Xet on: local store; S3 on moto (a mock) and on Ceph RGW (a real S3 server; skipped when
    its packages are not installed), each in redirect and proxy mode."""
    import uuid

    flavour: str = request.param
    s3 = None
    if flavour != "local":
        from helpers.rgw import S3Endpoint

        if flavour.endswith("-rgw"):
            s3 = request.getfixturevalue("rgw_s3")
        else:
            s3 = S3Endpoint(request.getfixturevalue("moto_s3"), "testing", "testing", "moto")
    bucket = None
    if s3 is not None:
        bucket = f"xet-{flavour}-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=bucket)
    hub = start_xet_hubgate(flavour, tmp_path_factory.mktemp(f"xet-{flavour}"), xet_repos,
                            s3_origin=s3.origin if s3 else None, bucket=bucket,
                            s3_keys=(s3.access_key, s3.secret_key) if s3 else None)
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def xet_local(tmp_path_factory: pytest.TempPathFactory, xet_repos: list[FixtureRepo]) -> Iterator[HubgateServer]:
    hub = start_xet_hubgate("local", tmp_path_factory.mktemp("xet-local-only"), xet_repos)
    yield hub
    hub.stop()
