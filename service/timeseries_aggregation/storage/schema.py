"""Versioned SQL migrations shipped in the package, each applied once per database.

A migration takes as long as the data it touches: no client-side or server-side time limit
applies to it, nor to a replica waiting for another's migration; both report progress in the
log instead. A migration that fails is rolled back and reported as a StartupError.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg

from timeseries_aggregation.errors import StartupError
from timeseries_aggregation.wording import clipped

logger = logging.getLogger(__name__)

# Any fixed number shared by all replicas: the advisory lock that serialises migrations.
MIGRATION_LOCK_KEY = 0x7453_6167  # "tSag"
# How often a replica asks for the lock while another one migrates.
_LOCK_POLL_SECONDS = 0.2

# The first line of a migration that builds an index while its table takes writes: CREATE
# INDEX CONCURRENTLY, which no transaction may hold. TimescaleDB refuses CONCURRENTLY on a
# hypertable and builds one chunk per transaction instead, so the file holds one statement for
# each kind of table, each after a line naming the kind; the one for the table's kind runs.
_INDEX_BUILD = re.compile(r"-- outside a transaction: index on (\w+)\n")
_KIND_LINE = re.compile(r"^-- on a (plain table|hypertable):\n", re.MULTILINE)
# asyncpg needs a number where a pool connection's command timeout would apply: a migration
# cut short would start again from nothing at the next start, so none is cut short.
_NO_TIME_LIMIT_SECONDS = 7 * 86_400.0

_HYPERTABLE = """
    SELECT EXISTS (
        SELECT 1 FROM _timescaledb_catalog.hypertable WHERE schema_name = current_schema() AND table_name = $1
    )
"""
# Indexes of a table that a build cut short (a lost connection, a crash) left behind.
_INVALID_INDEXES = (
    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = $1::regclass AND NOT indisvalid"
)
# The session holding the migration lock, what it runs and since when (its transaction's start,
# or its statement's outside one). A bigint advisory key shows as its high and low 32 bits.
_LOCK_HOLDER = """
    SELECT a.pid, extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::float8 AS seconds,
           a.query
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# What a statement of a migration may raise: the server's errors, and a lost connection.
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
# How much of the lock holder's statement a progress line quotes.
_QUOTED_STATEMENT_CHARACTERS = 120


@dataclass(frozen=True, slots=True)
class MigrationPacing:
    """How often the runner reports progress, and how it takes the locks a migration needs.

    A migration's ALTER TABLE needs its table to itself, and waits for the queries of the
    replicas still serving; every query that comes after waits behind it in PostgreSQL's lock
    queue, so a migration that waited without bound would stall all traffic. It waits at most
    `lock_timeout_seconds` instead, rolls back, lets the queue drain and tries again, after
    `first_retry_seconds`, doubling to at most `max_retry_seconds`. After `lock_attempts` such
    attempts it waits without a lock timeout: an ingest stream is one transaction, so while
    streams overlap the table is never free, and waiting in the queue lets those under way end
    (within their maximum age) while later ones wait.
    (On Citus this holds on the coordinator, where the service's queries take their locks.)
    Index builds wait without a lock timeout: CONCURRENTLY holds up no query, and TimescaleDB's
    build of one chunk per transaction only the writes to the chunk it indexes.
    """

    progress_seconds: float = 10.0
    lock_timeout_seconds: float = 5.0
    first_retry_seconds: float = 1.0
    max_retry_seconds: float = 60.0
    lock_attempts: int = 10


class MigrationFailedError(StartupError):
    """A migration failed; it was rolled back and the next start tries it again."""

    def __init__(self, version: str, error: BaseException, index_build: bool) -> None:
        # The database's own words: it never sees the URL or its password.
        reason = f"{type(error).__name__}: {error}".strip()
        undone = (
            "the index build was cut short; the next start drops what it left and builds it again"
            if index_build
            else "it was rolled back, so the schema is as it was before"
        )
        super().__init__(
            f"migration {version} failed ({reason}); {undone}. Fix what the database reports "
            "(or restore the backup taken before the upgrade), then start the server again: "
            "every start tries the migration again"
        )
        self.version = version


def migration_scripts() -> list[tuple[str, str]]:
    """(version, sql) for every shipped migration, in version order."""
    folder = resources.files("timeseries_aggregation.storage") / "migrations"
    scripts = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(scripts)


async def newest_migration(connection: asyncpg.Connection) -> str | None:
    """The version of the newest migration applied, or None on a database without any."""
    version: str | None = await connection.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def apply_migrations(
    connection: asyncpg.Connection,
    scripts: Sequence[tuple[str, str]] | None = None,
    pacing: MigrationPacing = MigrationPacing(),
) -> list[str]:
    """Apply the migrations this database lacks (of `scripts`, by default the shipped ones);
    returns the versions applied. Raises MigrationFailedError when one fails.

    Runs under an advisory lock, so replicas starting together apply each migration exactly
    once. Consecutive migrations run in one transaction and never show a half-migrated
    schema; an index build runs alone, after those before it committed.

    The others wait for the lock by asking again and again, never inside a statement: an index
    build waits for every transaction whose snapshot is older than its own, and a replica
    blocked on the lock inside one would wait for the build in turn.
    """
    await _take_migration_lock(connection, pacing.progress_seconds)
    try:
        done = await _applied_versions(connection)
        scripts = migration_scripts() if scripts is None else scripts
        pending = [(version, sql) for version, sql in scripts if version not in done]
        applied_now: list[str] = []
        while pending:
            index_build = _INDEX_BUILD.match(pending[0][1])
            if index_build is not None:
                version, sql = pending.pop(0)
                async with _progress(version, pacing.progress_seconds):
                    try:
                        await _build_index(connection, index_build.group(1), sql)
                        await _record(connection, version)
                    except _DATABASE_ERRORS as error:
                        raise MigrationFailedError(version, error, index_build=True) from error
                logger.info("applied migration %s", version)
                applied_now.append(version)
                continue
            group = []
            while pending and _INDEX_BUILD.match(pending[0][1]) is None:
                group.append(pending.pop(0))
            await _apply_in_one_transaction(connection, group, pacing)
            applied_now.extend(version for version, _ in group)
    finally:
        # A lost connection took the lock with it, and its error is the one to report.
        if not connection.is_closed():
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def _applied_versions(connection: asyncpg.Connection) -> set[str]:
    """The versions recorded in schema_migrations, which is created where it is missing."""
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        return {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
    except _DATABASE_ERRORS as error:
        raise StartupError(
            f"cannot read which migrations the database has ({type(error).__name__}: {error}): check "
            "that the database user may create tables in the database and read schema_migrations"
        ) from error


async def _take_migration_lock(connection: asyncpg.Connection, progress_seconds: float) -> None:
    """Take the migration lock, logging who holds it every `progress_seconds` meanwhile."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_report = started + progress_seconds
    while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        if loop.time() >= next_report:
            next_report = loop.time() + progress_seconds
            await _log_lock_holder(connection, loop.time() - started)
        await asyncio.sleep(_LOCK_POLL_SECONDS)


async def _log_lock_holder(connection: asyncpg.Connection, waited: float) -> None:
    key_high, key_low = MIGRATION_LOCK_KEY >> 32, MIGRATION_LOCK_KEY & 0xFFFF_FFFF
    holder = await connection.fetchrow(_LOCK_HOLDER, key_high, key_low)
    if holder is None:  # released between asking for it and looking
        return
    statement = clipped(" ".join(str(holder["query"] or "").split()), _QUOTED_STATEMENT_CHARACTERS)
    logger.info(
        "waiting for another server's migration (pid %d, running for %.0f s; waited %.0f s): %s",
        holder["pid"],
        holder["seconds"] or 0.0,
        waited,
        statement,
    )


@contextlib.asynccontextmanager
async def _progress(version: str, every_seconds: float) -> AsyncIterator[None]:
    """Log every `every_seconds` that the migration is still running, and for how long."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def report() -> None:
        while True:
            await asyncio.sleep(every_seconds)
            logger.info("migration %s running for %.0f s", version, loop.time() - started)

    reporter = asyncio.create_task(report())
    try:
        yield
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter


async def _record(connection: asyncpg.Connection, version: str) -> None:
    await connection.execute(
        "INSERT INTO schema_migrations (version) VALUES ($1)", version, timeout=_NO_TIME_LIMIT_SECONDS
    )


async def _apply_in_one_transaction(
    connection: asyncpg.Connection, group: list[tuple[str, str]], pacing: MigrationPacing
) -> None:
    """Apply the migrations of `group` in one transaction, without a statement timeout and
    with a lock timeout; when a lock is not granted in time, roll back and try again."""
    retry_seconds = pacing.first_retry_seconds
    lock_timeout_ms = max(1, round(pacing.lock_timeout_seconds * 1000))
    attempt = 1
    while True:
        version = group[0][0]
        if attempt >= pacing.lock_attempts:
            lock_timeout_ms = 0  # none: wait in the queue
        try:
            # SET LOCAL: the pool connection's own settings return with the transaction's end.
            async with connection.transaction():
                await connection.execute(
                    f"SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {lock_timeout_ms}"
                )
                for version, sql in group:
                    async with _progress(version, pacing.progress_seconds):
                        await connection.execute(sql, timeout=_NO_TIME_LIMIT_SECONDS)
                        await _record(connection, version)
        except asyncpg.LockNotAvailableError:
            last = attempt + 1 >= pacing.lock_attempts
            logger.warning(
                "migration %s waited %g s for a lock held by running queries; rolled back so they "
                "can go on, trying again in %g s%s",
                version,
                pacing.lock_timeout_seconds,
                retry_seconds,
                (
                    " without a lock timeout (writes wait behind it until the transactions holding "
                    "the table end)"
                    if last
                    else f" (attempt {attempt} of {pacing.lock_attempts})"
                ),
            )
            await asyncio.sleep(retry_seconds)
            retry_seconds = min(retry_seconds * 2, pacing.max_retry_seconds)
            attempt += 1
            continue
        except _DATABASE_ERRORS as error:
            raise MigrationFailedError(version, error, index_build=False) from error
        for version, _ in group:
            logger.info("applied migration %s", version)
        return


async def _build_index(connection: asyncpg.Connection, table: str, sql: str) -> None:
    """Run the statement of an index build for the kind of table `table` is, without a
    timeout, after dropping what an earlier build that was cut short left."""
    parts = _KIND_LINE.split(sql)  # what precedes the first kind, then each kind and its statement
    statements = {kind: statement.strip() for kind, statement in zip(parts[1::2], parts[2::2], strict=True)}
    timescaledb = await connection.fetchval(
        "SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL"
    )
    hypertable = timescaledb and await connection.fetchval(_HYPERTABLE, table)
    statement = statements["hypertable" if hypertable else "plain table"]
    timeout = _NO_TIME_LIMIT_SECONDS
    for index in await connection.fetch(_INVALID_INDEXES, table):
        # Only this replica builds (it holds the lock): an invalid index is a leftover.
        drop = "DROP INDEX" if hypertable else "DROP INDEX CONCURRENTLY"
        await connection.execute(f"{drop} {index[0]}", timeout=timeout)
    # Pool connections keep their session (storage/database.py): the setting goes back after.
    statement_timeout = await connection.fetchval("SHOW statement_timeout")
    await connection.execute("SET statement_timeout = 0")
    try:
        await connection.execute(statement, timeout=timeout)
    finally:
        await connection.execute("SELECT set_config('statement_timeout', $1, false)", statement_timeout)
