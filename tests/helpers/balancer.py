"""A tiny TCP load balancer on 127.0.0.1, as a cluster puts in front of its API replicas.

Each client connection goes to the next backend in turn; a backend that refuses the connection (a
replica that is down) is skipped, as a load balancer's health check would. When a backend dies
mid-response its client's connection is closed too, so the client sees a cut response (and the HF
client resumes it with a ``Range`` request, which goes to a live replica). Bytes sent to clients
are counted, so a test can act when a given share of a download has passed.
"""

from __future__ import annotations

import asyncio
import itertools
import threading


class Balancer:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.bytes_to_clients = 0
        self.connections = 0
        self._turn = itertools.count()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Balancer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the balancer did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            for w in list(self._writers):
                w.close()
            await asyncio.sleep(0.2)  # the transports finish closing before the loop goes
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        start = next(self._turn)
        error: OSError | None = None
        for i in range(len(self.backends)):
            port = self.backends[(start + i) % len(self.backends)]
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                error = exc
        raise error or OSError("no backend")

    async def _client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            backend_reader, backend_writer = await self._connect()
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, backend_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await reader.read(256 * 1024):
                    writer.write(data)
                    if count:
                        self.bytes_to_clients += len(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:  # either side gone: close both, as a proxy does
                for w in (client_writer, backend_writer):
                    w.close()
                    self._writers.discard(w)

        await asyncio.gather(pipe(client_reader, backend_writer, False), pipe(backend_reader, client_writer, True))
