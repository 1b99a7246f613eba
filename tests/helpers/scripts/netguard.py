"""Imported first by the client scripts: name resolution only for loopback names, so a client
that tries to reach anything else (huggingface.co, datasets-server.*) fails at once instead of
touching the network. The names it refused, and from where, are reported in the script's result."""

import socket
import traceback

ALLOWED = {"127.0.0.1", "localhost", "::1"}
refused: list[str] = []
where: dict[str, list[str]] = {}
_getaddrinfo = socket.getaddrinfo


def _guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in ALLOWED:
        refused.append(name)
        where.setdefault(name, [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-14:-1]])
        raise socket.gaierror(socket.EAI_NONAME, f"netguard: {name} is not a loopback name")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _guarded
