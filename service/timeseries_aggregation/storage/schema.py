"""Versioned SQL migrations shipped in the package, each applied once per database."""

import asyncio
import logging
import re
from importlib import resources

import asyncpg

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
# An index build has no statement timeout: cut short, it would start again from nothing.
_INDEX_BUILD_TIMEOUT_SECONDS = 7 * 86_400.0

_HYPERTABLE = """
    SELECT EXISTS (
        SELECT 1 FROM _timescaledb_catalog.hypertable WHERE schema_name = current_schema() AND table_name = $1
    )
"""
# Indexes of a table that a build cut short (a lost connection, a crash) left behind.
_INVALID_INDEXES = (
    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = $1::regclass AND NOT indisvalid"
)


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


async def apply_migrations(connection: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; returns the versions applied.

    Runs under an advisory lock, so replicas starting together apply each migration exactly
    once. Consecutive migrations run in one transaction and never show a half-migrated
    schema; an index build runs alone, after those before it committed.

    The others wait for the lock by asking again and again, never inside a statement: an index
    build waits for every transaction whose snapshot is older than its own, and a replica
    blocked on the lock inside one would wait for the build in turn.
    """
    while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):  # noqa: ASYNC110
        await asyncio.sleep(_LOCK_POLL_SECONDS)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        pending = [(version, sql) for version, sql in migration_scripts() if version not in done]
        applied_now: list[str] = []
        while pending:
            index_build = _INDEX_BUILD.match(pending[0][1])
            if index_build is not None:
                version, sql = pending.pop(0)
                await _build_index(connection, index_build.group(1), sql)
                await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                logger.info("applied migration %s", version)
                applied_now.append(version)
                continue
            async with connection.transaction():
                while pending and _INDEX_BUILD.match(pending[0][1]) is None:
                    version, sql = pending.pop(0)
                    await connection.execute(sql)
                    await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                    applied_now.append(version)
                    logger.info("applied migration %s", version)
    finally:
        # A lost connection took the lock with it, and its error is the one to report.
        if not connection.is_closed():
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


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
    timeout = _INDEX_BUILD_TIMEOUT_SECONDS
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
