"""A TCP proxy a test can freeze or cut.

Frozen, traffic stops in both directions while connections stay open, as when a peer's
machine vanishes without closing anything. Cut, every connection through it is closed at
once and new ones are closed as soon as they arrive, as when the peer's server process dies;
restored, connections go through again.
"""

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
        self._cut = False
        # cut_when()'s line: the pattern, the bytes allowed after it, the bytes left once it
        # has been seen, and the tail of what was sent before (a pattern split between reads).
        self._pattern: bytes | None = None
        self._then_bytes = 0
        self._bytes_left: int | None = None
        self._tail = b""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Close every connection through the proxy, both ends, and close new ones until restore()."""
        self._cut = True
        self._pattern = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def cut_when(self, pattern: bytes, then_bytes: int = 0) -> None:
        """Cut the proxy when, on any connection, data toward the target holds `pattern`, or
        later once `then_bytes` more have gone after it either way (its answer, say); the data
        that crosses the line is not sent."""
        self._pattern, self._then_bytes, self._bytes_left, self._tail = pattern, then_bytes, None, b""

    def restore(self) -> None:
        """Let connections through again (and forget a cut_when() line)."""
        self._cut = False
        self._pattern = None

    def _crosses_the_line(self, data: bytes, to_target: bool) -> bool:
        if self._pattern is None:
            return False
        if self._bytes_left is None:
            if not to_target:
                return False
            window = self._tail + data
            found = window.find(self._pattern)
            if found < 0:
                self._tail = (
                    window[len(window) - len(self._pattern) + 1 :]
                    if len(window) >= len(self._pattern)
                    else window
                )
                return False
            self._bytes_left = self._then_bytes - (len(window) - found - len(self._pattern))
            return self._then_bytes == 0 or self._bytes_left < 0
        self._bytes_left -= len(data)
        return self._bytes_left < 0

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_target: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if self._crosses_the_line(data, to_target):
                    self.cut()
                if self._cut:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()
        self._writers.discard(writer)

    async def _connect(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self._cut:
            client_writer.transport.abort()
            return
        host, port = self._target
        if port is None:
            server_reader, server_writer = await asyncio.open_unix_connection(host)
        else:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        if self._cut:
            client_writer.transport.abort()
            server_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        for pump in (
            self._pump(client_reader, server_writer, to_target=True),
            self._pump(server_reader, client_writer, to_target=False),
        ):
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
