"""The connection pool, its start-up, and the translation of connection failures."""

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from timeseries_aggregation.errors import (
    ConcurrencyConflictError,
    DatabaseUnavailableError,
    ResourceExhaustedError,
    StartupError,
)
from timeseries_aggregation.observability.tracing import database_span
from timeseries_aggregation.storage.driver_quirks import cancel_request_losses_quieted
from timeseries_aggregation.storage.engine import EngineCapabilities, detect_capabilities
from timeseries_aggregation.storage.schema import apply_migrations
from timeseries_aggregation.storage.writer_contract import (
    SESSION_SETTINGS,
    WRITER_CONTRACT,
    contract_error,
    is_contract_refusal,
    require_this_contract,
    required_contract,
)
from timeseries_aggregation.wording import counted

logger = logging.getLogger(__name__)

# Failures that mean "the database is not there right now", as opposed to a bug in a query.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # The connection's protocol state after its server end vanished mid-operation (seen when
    # a backend is terminated during a COPY): the connection is unusable.
    asyncpg.InternalClientError,
)
# Citus reports a lost connection to a worker as SQLSTATE 08006 where it notices it itself,
# as 58030 where a COPY to the worker fails, and as an internal error (XX000) where it relays
# the connection's own failure: then only the message tells (libpq's words, or Citus's once a
# connection of the transaction has failed). A COPY relays every error the worker sends as
# XX000 too, e.g. the worker's own shutdown.
_LOST_WORKER_MESSAGES = (
    "failure on connection marked as essential",
    "server closed the connection unexpectedly",
    "connection not open",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "SSL SYSCALL error",
    "SSL connection has been closed unexpectedly",
    "terminating connection",
    "connection to the remote node",
)
# The database ended a transaction to let another proceed: nothing was stored, retrying is safe.
_CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


def lost_the_database(error: BaseException) -> bool:
    """Whether the error means the database, or a Citus worker behind it, is not there right
    now (as opposed to a bug in a query or a conflict between transactions)."""
    if isinstance(error, (*_UNAVAILABLE_ERRORS, asyncpg.exceptions.PostgresIOError)):
        return True
    if isinstance(error, asyncpg.InternalServerError):
        return any(words in error.message for words in _LOST_WORKER_MESSAGES)
    return False


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How the pools connect and how long anything may take."""

    min_size: int = 1
    # The query pool's size.
    max_size: int = 10
    # The write pool's size: each ingest stream holds one connection while it writes, so
    # this is how many streams write at once (MAX_CONCURRENT_STREAMS).
    write_max_size: int = 16
    connect_timeout_seconds: float = 5.0
    acquire_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 30.0
    startup_timeout_seconds: float = 30.0
    # A safety net behind the service's own stream idle timeout: a transaction whose client
    # and server both vanished must not hold locks and a connection forever.
    idle_in_transaction_timeout_seconds: float = 90.0


class Database:
    """Two pools plus what was learned about the server at start-up.

    Readings are written through the write pool, whose commits wait for the WAL to reach
    disk. Queries go through the query pool, whose sessions commit asynchronously: the
    history entry a query writes may be lost if the database server crashes within a
    fraction of a second after it, and in exchange no query waits for a disk flush.
    """

    def __init__(
        self,
        url: str,
        write_pool: asyncpg.Pool,
        query_pool: asyncpg.Pool,
        settings: PoolSettings,
        capabilities: EngineCapabilities,
    ) -> None:
        self._url = url
        # Health's own connection: a pool busy with calls must never read as an outage.
        self._probe: asyncpg.Connection | None = None
        self._write_pool = write_pool
        self._query_pool = query_pool
        self._settings = settings
        self.capabilities = capabilities
        self._waiting = {"write": 0, "query": 0}
        # Tasks inside translate_errors(), i.e. waiting on the database; abandon_calls() ends them.
        self._users: dict[asyncio.Task[Any], int] = {}
        self._abandoned: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        # The database requires a newer schema contract of writers than this build keeps: set
        # at start-up, or when the database first refuses a write; health reports it.
        self.schema_moved_past = False

    @property
    def pools(self) -> dict[str, asyncpg.Pool]:
        """The pools by name, for whoever reports their use."""
        return {"write": self._write_pool, "query": self._query_pool}

    def waiting(self) -> dict[str, int]:
        """Calls waiting for a connection right now, by pool."""
        return dict(self._waiting)

    @asynccontextmanager
    async def _connection(self, name: str, acquire_timeout: float) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the named pool, counted as waiting until the pool hands it over."""
        pool = self.pools[name]
        self._waiting[name] += 1
        try:
            with database_span("pool acquire", {"db.client.connection.pool.name": name}):
                connection = await pool.acquire(timeout=acquire_timeout)
        except TimeoutError:
            if pool.get_size() < pool.get_max_size() or pool.get_idle_size():
                raise  # it was connecting that took too long: the database's trouble
            raise ResourceExhaustedError(
                f"all {counted(pool.get_max_size(), f'{name} connection')} stayed busy for "
                f"{acquire_timeout:g} s; retry with backoff"
            ) from None
        finally:
            self._waiting[name] -= 1
        try:
            yield connection
        except BaseException as error:
            if lost_the_database(error) or asyncio.current_task() in self._abandoned:
                # Closing politely would wait on a server that is not answering.
                terminate(connection)
            raise
        finally:
            await pool.release(connection)

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A write-pool connection; the caller runs its transaction on it."""
        async with (
            self.translate_errors(),
            self._connection("write", self._settings.acquire_timeout_seconds) as connection,
        ):
            yield connection

    async def require_this_contract(self) -> None:
        """Require this build's schema contract of every writer again where a rollback lowered
        it (writer_contract.py); the server's start does this, not the operator's commands."""
        async with self.write_connection() as connection:
            previous = await require_this_contract(connection)
        if previous is not None:
            logger.warning(
                "writers must keep schema contract %d again (it was %d, lowered for a rollback): "
                "servers of older builds may have written meanwhile, so run the checks of README's "
                "Upgrading section",
                WRITER_CONTRACT,
                previous,
            )

    @asynccontextmanager
    async def query_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A query-pool connection; each statement on it is its own transaction."""
        async with (
            self.translate_errors(),
            self._connection("query", self._settings.acquire_timeout_seconds) as connection,
        ):
            yield connection

    async def ping(self, timeout_seconds: float) -> None:
        """Raise DatabaseUnavailableError unless the database answers a trivial query in time."""
        try:
            async with asyncio.timeout(timeout_seconds):
                if self._probe is None or self._probe.is_closed():
                    self._probe = await asyncpg.connect(
                        self._url, server_settings={"application_name": "timeseries-aggregation health"}
                    )
                await self._probe.fetchval("SELECT 1")
        except _UNAVAILABLE_ERRORS as error:
            self.close_probe()
            await self._expire_connections()
            raise DatabaseUnavailableError("the database is unavailable") from error

    def close_probe(self) -> None:
        """Drop health's connection (it may be stuck on a frozen server: no goodbye)."""
        if self._probe is not None:
            self._probe.terminate()
            self._probe = None

    def abandon_calls(self) -> int:
        """End every call waiting on the database with DatabaseUnavailableError; how many.

        Health calls this when the database stops answering: a frozen server would otherwise
        hold each call until its statement timeout.
        """
        for task in self._users:
            self._abandoned.add(task)
            task.cancel()
        return len(self._users)

    @asynccontextmanager
    async def translate_errors(self) -> AsyncIterator[None]:
        """Turn connection-level failures into DatabaseUnavailableError, conflicts between
        transactions into ConcurrencyConflictError, and abandonment into the former.

        Idle connections of a pool whose server went away are all dead, so they are
        expired at once; the next call then connects afresh instead of failing again.
        """
        task = asyncio.current_task()
        assert task is not None
        self._users[task] = self._users.get(task, 0) + 1
        try:
            yield
        except asyncio.CancelledError:
            if task not in self._abandoned:
                raise
            self._abandoned.discard(task)
            task.uncancel()
            await self._expire_connections()
            raise DatabaseUnavailableError("the database stopped answering; retry later") from None
        except _CONFLICT_ERRORS as error:
            raise ConcurrencyConflictError(
                f"the database ended this transaction to resolve a conflict with another "
                f"({type(error).__name__}); nothing of it was stored, retry"
            ) from error
        except Exception as error:
            if is_contract_refusal(error):
                self.schema_moved_past = True
                raise contract_error(error) from None
            if not lost_the_database(error):
                raise
            # Citus sessions keep their connections to the workers: after a worker's restart
            # those of idle sessions are dead too, and a fresh session opens new ones.
            await self._expire_connections()
            logger.warning("database unavailable: %s", type(error).__name__)
            raise DatabaseUnavailableError("the database is unavailable; retry later") from error
        finally:
            remaining = self._users.pop(task) - 1
            if remaining:
                self._users[task] = remaining

    async def _expire_connections(self) -> None:
        await self._write_pool.expire_connections()
        await self._query_pool.expire_connections()


def row_count(status: str) -> int:
    """The row count of a command status such as 'COPY 20000', 'INSERT 0 17' or 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


def terminate(connection: asyncpg.Connection) -> None:
    """Close a connection without a word to the server; asyncpg may have released a pool
    connection whose server end vanished, and then there is nothing left to close."""
    with contextlib.suppress(asyncpg.InterfaceError):
        connection.terminate()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Return connections to the pool as they are: the service never changes session state
    (no SET, LISTEN, cursors or session locks), so asyncpg's reset round trip is waste."""


async def _create_pool(
    url: str, settings: PoolSettings, max_size: int, synchronous_commit: bool
) -> asyncpg.Pool:
    statement_timeout_ms = int(settings.statement_timeout_seconds * 1000)
    idle_in_transaction_ms = int(settings.idle_in_transaction_timeout_seconds * 1000)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        reset=_keep_session,
        min_size=min(settings.min_size, max_size),
        max_size=max_size,
        timeout=settings.connect_timeout_seconds,
        command_timeout=settings.statement_timeout_seconds,
        server_settings={
            "application_name": "timeseries-aggregation",
            "statement_timeout": str(statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(idle_in_transaction_ms),
            "synchronous_commit": "on" if synchronous_commit else "off",
            # Every session declares what its writes keep in step (writer_contract.py).
            **SESSION_SETTINGS,
        },
    )
    return pool


async def _wait_for_pool(
    url: str, settings: PoolSettings, max_size: int, synchronous_commit: bool
) -> asyncpg.Pool:
    """Create the pool, retrying while the database is still starting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_timeout_seconds
    delay = 0.2
    while True:
        try:
            return await _create_pool(url, settings, max_size, synchronous_commit)
        except (ValueError, asyncpg.ClientConfigurationError) as error:
            # The driver's message and traceback would quote the URL's parts (the password too).
            raise StartupError(
                f"the database URL cannot be used ({type(error).__name__}): check its form, "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, with special characters percent-encoded"
            ) from None
        except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError) as error:
            # Waiting cannot help; asyncpg's own message would name the user.
            raise StartupError(
                f"the database refused the connection ({type(error).__name__}): check the user name, "
                "password and database name in the database URL"
            ) from error
        except _UNAVAILABLE_ERRORS as error:
            if loop.time() + delay > deadline:
                raise DatabaseUnavailableError(
                    f"the database did not accept connections within {settings.startup_timeout_seconds:g} s "
                    f"({type(error).__name__}): check the host and port in the database URL, and that the "
                    "database is running"
                ) from error
            logger.info("waiting for the database (%s)", type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        except asyncpg.PostgresError as error:
            # Whatever else the server refuses, waiting would not cure (those it would, such as
            # a server still starting up, are caught above): most often a NAME=VALUE after '?'
            # that the server has no setting for.
            raise StartupError(
                f"the database refused the connection ({type(error).__name__}): check the "
                "parameters after '?' in the database URL"
            ) from None


@asynccontextmanager
async def open_database(url: str, settings: PoolSettings) -> AsyncIterator[Database]:
    """Connect, migrate the schema, detect what the engine can do; close the pools on exit."""
    with cancel_request_losses_quieted():
        async with _opened_database(url, settings) as database:
            yield database


@asynccontextmanager
async def _opened_database(url: str, settings: PoolSettings) -> AsyncIterator[Database]:
    write_pool = await _wait_for_pool(url, settings, settings.write_max_size, synchronous_commit=True)
    try:
        query_pool = await _create_pool(url, settings, settings.max_size, synchronous_commit=False)
        try:
            async with write_pool.acquire() as connection:
                await apply_migrations(connection)
                capabilities = await detect_capabilities(connection)
                required = await required_contract(connection)
            logger.info("database ready: %s", capabilities.describe())
            database = Database(url, write_pool, query_pool, settings, capabilities)
            if required is not None and required > WRITER_CONTRACT:
                database.schema_moved_past = True
                logger.error(
                    "the database's schema is newer than this build: it requires schema contract %d "
                    "of writers, this build keeps %d; every write is refused (FAILED_PRECONDITION) and "
                    "health reports NOT_SERVING until this server is upgraded (README: Upgrading)",
                    required,
                    WRITER_CONTRACT,
                )
            try:
                yield database
            finally:
                database.close_probe()
        finally:
            await _close(query_pool, settings)
    finally:
        await _close(write_pool, settings)


async def _close(pool: asyncpg.Pool, settings: PoolSettings) -> None:
    try:
        # Calls were drained before this; a connection still busy now is stuck.
        await asyncio.wait_for(pool.close(), timeout=settings.acquire_timeout_seconds)
    except TimeoutError:
        logger.warning("closing a pool timed out; terminating its connections")
        pool.terminate()
