"""The production shape, as real processes on loopback: two ``hubgate serve`` replicas (worker off) and two
``hubgate worker`` processes over one PostgreSQL database and one Ceph RGW bucket (S3 proxy mode), the
fake Hub as the upstream, and a TCP load balancer in front of the replicas for the HF clients.

The tests share one cluster (module scope) and run in file order; each leaves it with two replicas
and two workers running. Bounded: every wait has a timeout, every load a fixed count.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import hf_hub_download
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fakes.fake_hub import FakeHub
from helpers.balancer import Balancer
from helpers.cluster import Cluster, Proc, free_port, rss_bytes
from helpers.content import safetensors_bytes
from helpers.rgw import S3Endpoint
from registry.db import make_engine
from registry.models import AuditEvent, Job, KnownBlob, MirrorRequest, Repo, Snapshot
from registry.settings import DatabaseSettings

from .conftest import PostgresServer, card, small_files, unique_repo, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MiB = 1024 * 1024
RSS_LIMIT = 50 * MiB  # growth over idle allowed to any process while 64 clients stream


@pytest.fixture(scope="module")
def shape(postgres_server: PostgresServer, rgw_s3: S3Endpoint, fake_hub: FakeHub,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Engine, Balancer]]:
    folder = tmp_path_factory.mktemp("shape")
    balancer = Balancer([]).start()  # the replicas are added once started
    bucket = f"hubgate-shape-{uuid.uuid4().hex[:10]}"
    rgw_s3.client().create_bucket(Bucket=bucket)
    database = postgres_server.create_database()
    env = {
        "HUBGATE_DATABASE_URL": database,
        "HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": bucket, "HUBGATE_S3_ENDPOINT_URL": rgw_s3.origin,
        "HUBGATE_S3_ACCESS_KEY_ID": rgw_s3.access_key, "HUBGATE_S3_SECRET_ACCESS_KEY": rgw_s3.secret_key,
        "HUBGATE_S3_REGION": "us-east-1", "HUBGATE_S3_SERVE": "proxy",
        "HUBGATE_SECRET_KEY_FILE": str(folder / "secret.key"),  # replicas and workers share the instance keys
        "HUBGATE_SIGNING_KEY_FILE": str(folder / "signing-key.pem"),
        "HUBGATE_UPSTREAM_URL": fake_hub.url, "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",
        "HUBGATE_UPSTREAM_REDIRECT_HOSTS": fake_hub.cdn_url.split("://", 1)[1],
        "HUBGATE_WORKER_LEASE_SECONDS": "3", "HUBGATE_REF_CACHE_SECONDS": "1", "HUBGATE_LOG_LEVEL": "warning",
        "HUBGATE_PUBLIC_URL": balancer.url,  # clients reach the replicas through it: its Host is allowed
    }
    cluster = Cluster(folder, env)
    # Once, before the others start: the schema, the instance keys and an admin token.
    cluster.admin_token = cluster.cli("token", "create", "--role", "admin", "--name", "shape-admin").split()[-1]
    engine = make_engine(DatabaseSettings(url=database))
    try:
        for _ in range(2):
            balancer.backends.append(cluster.add_replica().port)  # type: ignore[arg-type]
        for _ in range(2):
            cluster.add_worker()
        time.sleep(2)  # started and idle: the baseline
        with _RssWatch(lambda: [*cluster.replicas, *cluster.workers]) as watch:
            yield cluster, engine, balancer
        for (name, pid), (first, peak) in sorted(watch.seen.items()):
            print(f"RSS {name} (pid {pid}): {first / MiB:.0f} MiB idle (or when started later), "
                  f"peak {peak / MiB:.0f} MiB (+{(peak - first) / MiB:.0f})")
    finally:
        balancer.stop()
        cluster.stop()
        engine.dispose()
        for p in [*cluster.replicas, *cluster.workers]:
            if p.popen is not None and p.popen.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                print(f"--- {p.name} exited {p.popen.returncode}:\n{p.tail()}")


class _RssWatch:
    """RSS of the cluster's processes every 100 ms: (first sample, peak) per process."""

    def __init__(self, procs: Callable[[], list[Proc]]) -> None:
        self._procs = procs
        self.seen: dict[tuple[str, int], tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for p in self._procs():
                rss = p.rss()
                if rss:
                    first, peak = self.seen.get((p.name, p.pid), (rss, 0))
                    self.seen[(p.name, p.pid)] = (first, max(peak, rss))

    def __enter__(self) -> "_RssWatch":
        for p in self._procs():
            self.seen[(p.name, p.pid)] = (p.rss(), p.rss())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _request(cluster: Cluster, repo: str, replica: int = 0, **body: Any) -> int:
    r = cluster.api(replica, "POST", "/requests", json={"repo_type": "model", "repo_id": repo, "revision": "main",
                                                        "reason": "shape", **body})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _approve(cluster: Cluster, pk: int, replica: int = 0) -> httpx.Response:
    return cluster.api(replica, "POST", f"/requests/{pk}/approve", json={"reason": "shape test"})


def _state(engine: Engine, pk: int) -> MirrorRequest:
    with Session(engine) as session:
        req = session.get(MirrorRequest, pk)
        assert req is not None
        return req


def _wait_states(engine: Engine, pks: list[int], states: set[str], cluster: Cluster, timeout: float = 90) -> None:
    def reached() -> bool:
        current = {pk: _state(engine, pk).state for pk in pks}
        failed = {pk: _state(engine, pk).error for pk, s in current.items() if s == "failed" and "failed" not in states}
        if failed:
            raise AssertionError(f"failed: {failed}\n" + "\n".join(w.tail(2000) for w in cluster.workers))
        return all(s in states for s in current.values())

    wait_for(reached, timeout=timeout, interval=0.2, what=f"requests {pks} to be {states}")


def _jobs(engine: Engine, pk: int) -> list[Job]:
    with Session(engine) as session:
        return [j for j in session.exec(select(Job)).all() if j.payload.get("request") == pk]


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at the same instant; return their results."""
    barrier = threading.Barrier(len(calls), timeout=30)
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _worker_of(engine: Engine, pk: int, cluster: Cluster) -> Proc | None:
    for job in _jobs(engine, pk):
        if job.state == "running":
            return next((w for w in cluster.workers if f":{w.pid}:" in (job.lease_owner or "")), None)
    return None


# ---------------------------------------------------------------------------------------------------------


def test_each_request_is_synced_once_and_a_killed_workers_job_is_finished_by_the_other(
        shape: tuple[Cluster, Engine, Balancer], fake_hub: FakeHub) -> None:
    cluster, engine, _ = shape
    big = safetensors_bytes(24 * MiB, 41)
    repos = {name: unique_repo(f"shape-{name}") for name in ("a", "b", "c")}
    commits = {
        "a": fake_hub.create_repo(repos["a"], {"README.md": card("mit", title=repos["a"]), "big.safetensors": big,
                                              **small_files(410, n=6)}),
        "b": fake_hub.create_repo(repos["b"], {"README.md": card("mit", title=repos["b"]), **small_files(411, n=4)}),
        "c": fake_hub.create_repo(repos["c"], {"README.md": card("mit", title=repos["c"]), **small_files(412, n=4)}),
    }
    big_file = commits["a"].files["big.safetensors"]
    fake_hub.throttle(big_file.sha256, 3 * MiB)  # eight seconds: the worker is killed in the middle of it
    mark = fake_hub.log.mark()
    try:
        pks = {name: _request(cluster, repo, i % 2) for i, (name, repo) in enumerate(repos.items())}
        for i, pk in enumerate(pks.values()):
            assert _approve(cluster, pk, i % 2).status_code == 200
        small_a = [f for f in commits["a"].files.values() if f.path != "big.safetensors"]

        def a_half_done() -> Proc | None:
            started = [e for e in fake_hub.log.content_gets(big_file.sha256, mark) if e.bytes_sent > 2 * MiB]
            with Session(engine) as session:
                recorded = session.exec(select(KnownBlob.sha256).where(
                    col(KnownBlob.sha256).in_([f.sha256 for f in small_a]))).all()
            return _worker_of(engine, pks["a"], cluster) if started and len(recorded) == len(small_a) else None

        victim = wait_for(a_half_done, timeout=60, interval=0.1, what="repo a's small files stored, its big one started")
        victim.kill()  # SIGKILL, mid-file
    finally:
        fake_hub.throttle(big_file.sha256, None)
    _wait_states(engine, list(pks.values()), {"available"}, cluster)
    victim.start()  # back to two workers for the next tests

    for name, pk in pks.items():  # the job is marked done just after the request is published
        jobs = wait_for(lambda pk=pk: [j for j in _jobs(engine, pk) if j.state != "running"], timeout=10,
                        what="the job to be marked done")
        assert [(j.state, j.attempts) for j in jobs] == [("done", 2 if name == "a" else 1)], (name, jobs)
    for name, commit in commits.items():  # every file fetched once, but the one the killed worker was reading
        for f in commit.files.values():
            gets = fake_hub.log.content_gets(f.sha256, mark)
            if f is big_file:
                assert [(e.complete, e.bytes_sent < f.size) for e in gets] == [(False, True), (True, False)]
            else:
                assert len(gets) == 1, (name, f.path, gets)
    with Session(engine) as session:
        finished = session.exec(select(AuditEvent.target).where(AuditEvent.action == "request.finish")).all()
    assert sorted(t for t in finished if t in {f"request:{pk}" for pk in pks.values()}) == sorted(
        f"request:{pk}" for pk in pks.values())
    for replica in range(2):  # either replica serves it, streamed from the bucket
        r = httpx.get(f"{cluster.replicas[replica].url}/{repos['a']}/resolve/main/big.safetensors", timeout=60)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == big_file.sha256


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def test_two_admins_approving_or_retrying_at_once_through_two_replicas_queue_one_job(
        shape: tuple[Cluster, Engine, Balancer], fake_hub: FakeHub) -> None:
    cluster, engine, _ = shape
    for attempt in range(3):
        repo = unique_repo(f"shape-approve{attempt}")
        fake_hub.create_repo(repo, {"README.md": card("mit", title=repo), **small_files(420 + attempt, n=2)})
        pk = _request(cluster, repo)
        statuses = _race([lambda: _approve(cluster, pk, 0).status_code, lambda: _approve(cluster, pk, 1).status_code])
        assert sorted(statuses) == [200, 409], statuses
        assert len(_jobs(engine, pk)) == 1
    # a request the content scan blocks, retried by two admins at once
    repo = unique_repo("shape-retry")
    fake_hub.create_repo(repo, {"README.md": card("mit", title=repo), "weights.pkl": pickle.dumps(_Exploit())})
    pk = _request(cluster, repo)
    assert _approve(cluster, pk).status_code == 200
    _wait_states(engine, [pk], {"blocked"}, cluster)
    statuses = _race([lambda: cluster.api(0, "POST", f"/requests/{pk}/retry").status_code,
                      lambda: cluster.api(1, "POST", f"/requests/{pk}/retry").status_code])
    assert sorted(statuses) == [200, 409], statuses
    assert len(_jobs(engine, pk)) == 2  # the approval's and one retry's
    _wait_states(engine, [pk], {"blocked"}, cluster)


def test_requests_sharing_blobs_synced_at_once_by_two_workers_all_end_available(
        shape: tuple[Cluster, Engine, Balancer], rgw_s3: S3Endpoint, fake_hub: FakeHub) -> None:
    cluster, engine, _ = shape
    shared = {"shared.safetensors": safetensors_bytes(6 * MiB, 43), **small_files(430, n=3)}
    repos = [unique_repo("shape-share1"), unique_repo("shape-share2"), unique_repo("shape-same")]
    commits = [fake_hub.create_repo(r, {"README.md": card("mit", title=r), **shared}) for r in repos]
    shared_sha = commits[0].files["shared.safetensors"].sha256
    fake_hub.throttle(shared_sha, 4 * MiB)  # both workers are in the middle of it at once
    try:
        # two repos with the same files, and the same repo at the same commit asked for twice
        pks = [_request(cluster, repos[0]), _request(cluster, repos[1], 1), _request(cluster, repos[2]),
               _request(cluster, repos[2], 1, reason="again")]
        statuses = _race([lambda pk=pk, i=i: _approve(cluster, pk, i % 2).status_code for i, pk in enumerate(pks)])
        assert statuses == [200] * 4
        _wait_states(engine, pks, {"available"}, cluster, timeout=120)
    finally:
        fake_hub.throttle(shared_sha, None)
    with Session(engine) as session:
        same = session.exec(select(Snapshot).join(Repo).where(Repo.repo_id == repos[2])).all()
        assert [s.commit for s in same] == [commits[2].sha]
        assert session.exec(select(KnownBlob).where(KnownBlob.sha256 == shared_sha)).one().size == 6 * MiB
    # the bucket holds the manifest the database indexed (the second publish did not write over it)
    from mirror.storage import layout
    from registry.manifest import Manifest
    from registry.types import RepoRef

    bucket = cluster.env["HUBGATE_S3_BUCKET"]
    key = layout.manifest_key(RepoRef.parse("model", repos[2]), commits[2].sha)
    stored = Manifest.from_json(rgw_s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored.digest() == same[0].manifest_digest


def test_a_ref_moved_through_one_replica_is_served_by_the_other_within_the_ref_cache_ttl(
        shape: tuple[Cluster, Engine, Balancer], fake_hub: FakeHub) -> None:
    cluster, engine, _ = shape
    repo = unique_repo("shape-ref")
    first = fake_hub.create_repo(repo, {"README.md": card("mit", title=repo), **small_files(440, n=2)})
    second = fake_hub.commit(repo, {"data/part-0.txt": b"moved\n"})
    pks = [_request(cluster, repo, revision=first.sha), _request(cluster, repo, revision=second.sha)]
    for pk in pks:
        assert _approve(cluster, pk).status_code == 200
    _wait_states(engine, pks, {"available"}, cluster)
    assert cluster.api(0, "PUT", f"/repos/model/{repo}/refs/main", json={"commit": first.sha}).status_code == 200

    def served_by_b() -> str:
        r = httpx.head(f"{cluster.replicas[1].url}/{repo}/resolve/main/README.md", timeout=10)
        assert r.status_code == 200, r.text
        return r.headers["x-repo-commit"]

    wait_for(lambda: served_by_b() == first.sha, timeout=10, what="replica 1 to serve main")  # and cache it
    moved = cluster.api(0, "PUT", f"/repos/model/{repo}/refs/main", json={"commit": second.sha})
    assert moved.status_code == 200, moved.text
    t0 = time.monotonic()
    wait_for(lambda: served_by_b() == second.sha, timeout=10, interval=0.02, what="replica 1 to see the move")
    ttl = float(cluster.env["HUBGATE_REF_CACHE_SECONDS"])
    assert time.monotonic() - t0 <= ttl + 0.5


def _sync_file(cluster: Cluster, engine: Engine, fake_hub: FakeHub, name: str, size: int, seed: int) -> tuple[str, str]:
    repo = unique_repo(name)
    data = safetensors_bytes(size, seed)
    commit = fake_hub.create_repo(repo, {"README.md": card("mit", title=repo), "weights.safetensors": data})
    pk = _request(cluster, repo)
    assert _approve(cluster, pk).status_code == 200
    _wait_states(engine, [pk], {"available"}, cluster)
    return repo, commit.files["weights.safetensors"].sha256


def test_64_clients_through_both_replicas_get_the_right_bytes_while_one_is_killed_and_restarted(
        shape: tuple[Cluster, Engine, Balancer], fake_hub: FakeHub, tmp_path: Path) -> None:
    cluster, engine, balancer = shape
    size, clients = 16 * MiB, 64
    repo, sha = _sync_file(cluster, engine, fake_hub, "shape-fleet", size, 45)
    mark = balancer.bytes_to_clients
    results: list[Any] = [None] * clients
    victim = cluster.replicas[0]

    calls_again: list[str] = []

    def download(i: int) -> None:
        # hf_hub_download resumes a cut body by itself (with Range). A connection reset it raises: the
        # balancer resets a pooled keep-alive connection whose replica died while it was idle, and the
        # client's next request on it fails. Then the client calls again, which resumes from its
        # .incomplete file, as a training job's retry would.
        for attempt in range(3):
            try:
                path = hf_hub_download(repo, "weights.safetensors", endpoint=balancer.url,
                                       cache_dir=tmp_path / f"c{i}", token=False)
                with open(path, "rb") as f:
                    results[i] = hashlib.file_digest(f, "sha256").hexdigest()
                shutil.rmtree(tmp_path / f"c{i}", ignore_errors=True)
                return
            except Exception as exc:  # noqa: BLE001 - reported below
                if attempt == 2 or ("ReadError" not in type(exc).__name__ and "Connection reset" not in str(exc)):
                    results[i] = exc
                    return
                calls_again.append(repr(exc))

    def quarter_done() -> bool:
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise AssertionError(f"a client failed before the kill: {failed[0]!r}")
        return balancer.bytes_to_clients - mark > clients * size // 4

    threads = [threading.Thread(target=download, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    wait_for(quarter_done, timeout=120, interval=0.02, what="a quarter of the downloads")
    victim.kill()  # SIGKILL with a few dozen streams in flight through it
    killed_at = balancer.bytes_to_clients - mark
    time.sleep(1)
    victim.start()
    for t in threads:
        t.join(240)
    errors = [r for r in results if not isinstance(r, str)]
    assert not errors, errors[:3]
    assert results == [sha] * clients
    assert killed_at < clients * size, "every download had finished before the kill"
    assert victim.starts >= 2
    assert len(calls_again) <= clients // 4, calls_again
    print(f"64 clients: replica killed after {killed_at / MiB:.0f} MiB of {clients * size / MiB:.0f} MiB; "
          f"{len(calls_again)} client(s) called hf_hub_download again after a connection reset")


def _curl_fleet(url: str, n: int, rate: str, watch: Proc) -> tuple[list[str], int]:
    """``n`` concurrent rate-limited curls of ``url`` (slow clients: the server must hold their backlog, not
    buffer it); returns their sha256s and ``watch``'s peak RSS meanwhile."""
    procs = [subprocess.Popen(f"curl -sS --noproxy '*' --limit-rate {rate} --max-time 120 '{url}' | sha256sum",
                              shell=True, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    peak = watch.rss()
    while any(p.poll() is None for p in procs):
        peak = max(peak, watch.rss())
        time.sleep(0.05)
    return [p.communicate()[0].split()[0] for p in procs], peak


@pytest.mark.parametrize("mode", ["s3-proxy", "local"])
def test_rss_stays_flat_with_64_concurrent_streams(
        mode: str, shape: tuple[Cluster, Engine, Balancer], fake_hub: FakeHub, tmp_path: Path) -> None:
    cluster, engine, _ = shape
    size = 32 * MiB
    if mode == "s3-proxy":
        repo, sha = _sync_file(cluster, engine, fake_hub, "shape-rss", size, 46)
        server = cluster.replicas[1]
    else:  # one replica on the local store (SQLite), the embedded default
        folder = tmp_path / "model"
        folder.mkdir()
        data = safetensors_bytes(size, 47)
        (folder / "weights.safetensors").write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        repo = "acme/rss-local"
        port = free_port()
        local = Cluster(tmp_path, {"HUBGATE_LOG_LEVEL": "warning", "HUBGATE_DATA_DIR": str(tmp_path / "data")})
        server = Proc("local", [str(Path(os.sys.executable).with_name("hubgate")), "serve"],  # type: ignore[attr-defined]
                      {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | local.env
                      | {"HUBGATE_PORT": str(port)}, tmp_path / "local.log", port)
        subprocess.run([server.argv[0], "import", str(folder), "--repo", repo], env=server.env, check=True,
                       capture_output=True, timeout=120)
        server.start()
    url = f"{server.url}/{repo}/resolve/main/weights.safetensors"
    try:
        sums, _ = _curl_fleet(url, 2, "1G", server)  # warm: the blob read once, the lazy imports done
        assert sums == [sha] * 2
        idle = server.rss()
        sums, peak = _curl_fleet(url, 64, "16M", server)  # two seconds each, all at once
    finally:
        if mode == "local":
            server.stop()
    assert sums == [sha] * 64
    print(f"{mode}: RSS idle {idle / MiB:.0f} MiB, peak with 64 streams {peak / MiB:.0f} MiB (+{(peak - idle) / MiB:.0f})")
    assert peak - idle <= RSS_LIMIT, f"{mode}: RSS grew by {(peak - idle) / MiB:.0f} MiB with 64 streams"
