"""A TCP proxy a test can freeze: traffic stops in both directions while connections stay
open, as when a peer's machine vanishes without closing anything."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FreezableProxy:
    """Listens on a loopback TCP port; forwards to a TCP host and port, or to a Unix socket
    when target_port is None and target_host is the socket's path."""

    def __init__(self, target_host: str, target_port: int | None) -> None:
        self._target = (target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _connect(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        host, port = self._target
        if port is None:
            server_reader, server_writer = await asyncio.open_unix_connection(host)
        else:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        for pump in (self._pump(client_reader, server_writer), self._pump(server_reader, client_writer)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @asynccontextmanager
    async def running(self) -> AsyncIterator["FreezableProxy"]:
        server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
