"""``python -m mirror.xet.uploader ENDPOINT``: one hf_xet upload session, in a child process of its own.

Run by mirror/xet/builder.py, never by hand. A child process because hf_xet takes its cache folder from
the environment (``HF_XET_CACHE``, one sub-folder per CAS endpoint) and keeps a Rust runtime: the
builder gives each session a temporary cache that disappears with it, and a crash in native code
cannot take the worker or the API down. The CAS token comes on standard input (never in ``ps``).

Standard input: one JSON line ``{"token": …, "files": [{"path": …} | {"stream": size}, …]}``, then the
raw bytes of each ``stream`` file in order. Standard output: one JSON line per file
``{"index": i, "file_hash": …, "size": …}``, then ``{"done": true}``; a failure prints ``{"error": …}``
and exits 1.
"""

from __future__ import annotations

import json
import sys
import time

_CHUNK = 8 * 1024 * 1024


def main(argv: list[str]) -> int:
    import hf_xet

    endpoint = argv[0]
    request = json.loads(sys.stdin.buffer.readline())
    config = (hf_xet.XetConfig().with_config("telemetry.enabled", False)
              .with_config("client.retry_max_attempts", 2).with_config("client.retry_base_delay", "1s")
              # one POST of the whole xorb (the CAS API of the specification), not the grant-then-PUT handshake
              .with_config("client.legacy_direct_xorb_upload", True))
    session = hf_xet.XetSession(config)
    handles = []
    try:
        with session.new_upload_commit(endpoint=endpoint, token=request["token"],
                                       token_expiry_unix_secs=int(time.time()) + 7 * 24 * 3600) as commit:
            for item in request["files"]:
                if "path" in item:
                    handles.append(commit.start_upload_file(item["path"]))
                    continue
                stream, left = commit.start_upload_stream(), int(item["stream"])
                while left > 0:
                    data = sys.stdin.buffer.read(min(_CHUNK, left))
                    if not data:
                        raise EOFError("standard input ended inside a streamed file")
                    stream.write(data)
                    left -= len(data)
                handles.append(stream.finish())
        for i, h in enumerate(handles):
            meta = h.result() if hasattr(h, "result") else h
            print(json.dumps({"index": i, "file_hash": meta.xet_info.hash, "size": meta.xet_info.file_size}),
                  flush=True)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
