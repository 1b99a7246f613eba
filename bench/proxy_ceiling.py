"""The ceiling of any S3 proxy on this box: a minimal relay between the store and curl, against curl direct.

Usage: python bench/proxy_ceiling.py [--store rgw|moto] [--size-mib 512] [--rounds 2]

S3 proxy mode (``HUBGATE_S3_SERVE=proxy``) puts a second loopback TCP hop between the store and the
client. This measures what that hop costs before any of hubgate's work: one thread per connection, blocking
sockets, no HTTP library, the object's body moved either with ``os.splice`` through a pipe (no copy into
the process) or with ``recv_into``/``sendall`` on one reused buffer. Each round runs ``curl`` of the
presigned URL (direct) and ``curl`` through the relay, one after the other, on the same object. The ratio
relay / direct is the most ``bench/serve_bench.py``'s S3-proxy ratio can reach on the same box. MB/s is
10^6 bytes per second.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

F_SETPIPE_SZ = 1031
BUCKET = "bench-proxy-ceiling"


def relay(conn: socket.socket, host: str, port: int, path: str, mode: str) -> None:
    """Answer one request on ``conn`` with the body of ``GET path`` from host:port."""
    conn.recv(65536)
    with socket.create_connection((host, port)) as up:
        up.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += up.recv(65536)
        head, body = buf.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % length + body)
        left = length - len(body)
        if mode == "splice":
            r, w = os.pipe()
            fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
            while left:
                n = os.splice(up.fileno(), w, min(left, 1 << 20))
                if n == 0:
                    break
                sent = 0
                while sent < n:
                    sent += os.splice(r, conn.fileno(), n - sent)
                left -= n
            os.close(r)
            os.close(w)
        else:
            view = memoryview(bytearray(1 << 20))
            while left:
                n = up.recv_into(view[: min(left, len(view))])
                if n == 0:
                    break
                conn.sendall(view[:n])
                left -= n
    conn.close()


def curl(url: str) -> float:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url], capture_output=True,
                         text=True, check=True).stdout
    return float(out) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["rgw", "moto"], default="rgw")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if a.store == "rgw":
        from helpers.rgw import RgwCluster

        cluster = RgwCluster(Path(tempfile.mkdtemp(prefix="proxy-ceiling-")))
        endpoint = cluster.acquire("proxy-ceiling")
        origin, client = endpoint.origin, endpoint.client()

        def stop() -> None:
            cluster.release("proxy-ceiling")
    else:  # moto's own server command, as serve_bench.py runs it
        import boto3

        from serve_bench import free_port

        port = free_port()
        server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        origin = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=origin, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        for _ in range(100):
            try:
                client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)

        def stop() -> None:
            server.terminate()
            server.wait(10)
    try:
        client.create_bucket(Bucket=BUCKET)
        client.upload_fileobj(io.BytesIO(os.urandom(a.size_mib * 2**20)), BUCKET, "object")
        url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "object"}, ExpiresIn=3600)
        host, port = origin.removeprefix("http://").split(":")
        path = url.split(origin, 1)[1]
        rates: dict[str, list[float]] = {"direct": [], "splice": [], "copy": []}
        for _ in range(a.rounds):
            for mode in ("splice", "copy"):
                srv = socket.socket()
                srv.bind(("127.0.0.1", 0))
                srv.listen(1)
                t = threading.Thread(target=lambda: relay(srv.accept()[0], host, int(port), path, mode))
                t.start()
                rates["direct"].append(curl(url))
                rates[mode].append(curl(f"http://127.0.0.1:{srv.getsockname()[1]}/object"))
                t.join()
                srv.close()
        direct = statistics.median(rates["direct"])
        print(f"# {a.store}, {a.size_mib} MiB object, {a.rounds} rounds, median; {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f}")
        print(f"curl direct (presigned GET)   {direct:7.0f} MB/s")
        for mode in ("splice", "copy"):
            rate = statistics.median(rates[mode])
            print(f"curl through a {mode:<6} relay   {rate:7.0f} MB/s   {rate / direct:.2f} of direct")
    finally:
        stop()


if __name__ == "__main__":
    main()
