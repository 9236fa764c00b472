"""Migrated test databases, each test's own, reused after a test that passed.

The databases themselves are made and dropped by bench/throwaway_databases.py, which the
benchmarks share.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from bench.throwaway_databases import (
    CitusCluster,
    create_database,
    drop_database,
    has_extension,
    with_database,
    with_node,
)
from tests.support import eventually

# What a reused database must still have in common with a freshly migrated one, beyond empty
# tables: its relations, routines and triggers, the migrations applied, its own settings, and
# where the extensions are in use, their distribution, hypertables and background jobs.
_SCHEMA_FINGERPRINT = """
SELECT jsonb_build_object(
    'relations', (SELECT coalesce(jsonb_agg(jsonb_build_array(c.relname, c.relkind, c.reloptions)
                                            ORDER BY c.relname), '[]')
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public'),
    'routines', (SELECT coalesce(jsonb_agg(p.proname ORDER BY p.proname), '[]')
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'public'),
    'triggers', (SELECT coalesce(jsonb_agg(t.tgname ORDER BY t.tgname), '[]')
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND NOT t.tgisinternal),
    'migrations', (SELECT jsonb_agg(version ORDER BY version) FROM schema_migrations),
    'settings', (SELECT coalesce(jsonb_agg(s.setconfig), '[]') FROM pg_db_role_setting s
                 WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))
)
"""
_TIMESCALEDB_FINGERPRINT = """
SELECT jsonb_build_object(
    'dimensions', (SELECT coalesce(jsonb_agg(jsonb_build_array(hypertable_name, column_name,
                                                               time_interval::text)
                                             ORDER BY hypertable_name, column_name), '[]')
                   FROM timescaledb_information.dimensions),
    'compression', (SELECT coalesce(jsonb_agg(jsonb_build_array(hypertable_name, compression_enabled)
                                              ORDER BY hypertable_name), '[]')
                    FROM timescaledb_information.hypertables),
    'jobs', (SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000)
)
"""
_CITUS_FINGERPRINT = """
SELECT jsonb_build_object(
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_array(table_name::text, citus_table_type,
                                                           distribution_column, shard_count)
                                         ORDER BY table_name::text), '[]')
               FROM citus_tables),
    'nodes', (SELECT jsonb_agg(jsonb_build_array(nodename, nodeport, isactive, noderole)
                               ORDER BY nodeport) FROM pg_dist_node)
)
"""
# The client sessions of the test that still hold the database (its server processes'
# pools closing): the database is reused only once they are gone. Citus's maintenance daemon
# keeps sessions of its own to the coordinator (recovering two-phase commits, looking for
# distributed deadlocks) for as long as the database exists; they are not the test's.
_OTHER_SESSIONS = """
SELECT application_name, state, query FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND application_name NOT LIKE 'citus\\_internal%'
"""


async def _fingerprint(connection: asyncpg.Connection) -> str:
    parts = [await connection.fetchval(_SCHEMA_FINGERPRINT)]
    if await has_extension(connection, "timescaledb"):
        parts.append(await connection.fetchval(_TIMESCALEDB_FINGERPRINT))
    if await has_extension(connection, "citus"):
        parts.append(await connection.fetchval(_CITUS_FINGERPRINT))
    return "\n".join(str(part) for part in parts)


class DatabaseSupply:
    """Migrated test databases, each test's own, reused after a test that passed.

    Creating a database costs most on Citus (the extension on every node, the nodes
    registered, the tables distributed): over a second per test. A database a test has
    passed on is emptied (every table truncated, background jobs removed) and handed to the
    next test only when nothing else is connected to it and its schema, settings, distribution
    and jobs are still those of a freshly migrated one; otherwise it is dropped, as is the
    database of a failed test. Tests that need a database never migrated ask for a new one.
    """

    def __init__(
        self, server_url: str, cluster: CitusCluster | None, migrate: Callable[[str], Awaitable[None]]
    ) -> None:
        self._server_url = server_url
        self._cluster = cluster
        self._migrate = migrate
        self._spares: list[str] = []
        self._reference: str | None = None
        self.created = 0
        self.reused = 0

    def url(self, name: str) -> str:
        return with_database(self._server_url, name)

    async def new(self) -> str:
        """The name of a new database, set up for the cluster but never migrated."""
        name = f"timeseries_test_{uuid.uuid4().hex[:16]}"
        await create_database(self._server_url, name, self._cluster)
        self.created += 1
        return name

    async def migrated(self) -> str:
        """The name of a migrated, empty database: a spare when there is one."""
        if self._spares:
            self.reused += 1
            return self._spares.pop()
        name = await self.new()
        try:
            await self._migrate(self.url(name))
            if self._reference is None:
                connection = await asyncpg.connect(self.url(name))
                try:
                    self._reference = await _fingerprint(connection)
                finally:
                    await connection.close()
        except BaseException:
            await self.drop(name)
            raise
        return name

    async def give_back(self, name: str, passed: bool) -> None:
        """Keep the database for the next test if it can be made as new, else drop it."""
        if passed and self._reference is not None:
            try:
                if await self._emptied(name):
                    self._spares.append(name)
                    return
            except (AssertionError, OSError, asyncpg.PostgresError):
                # Still in use, or not emptied in time: a new database is cheaper than a doubt.
                pass
        await self.drop(name)

    async def _emptied(self, name: str) -> bool:
        connection = await asyncpg.connect(
            self.url(name), server_settings={"lock_timeout": "5s", "statement_timeout": "30s"}
        )
        try:
            await eventually(lambda: _no_other_sessions(connection), within=3.0)
            if await has_extension(connection, "timescaledb"):
                await connection.execute(
                    "SELECT delete_job(job_id) FROM timescaledb_information.jobs WHERE job_id >= 1000"
                )
            tables = await connection.fetch(
                "SELECT format('%I', c.relname) AS name FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'schema_migrations'"
            )
            truncated = [table["name"] for table in tables]
            if self._cluster is not None:
                truncated = await _delete_few_distributed_rows(connection, truncated)
            if truncated:
                await connection.execute(f"TRUNCATE {', '.join(truncated)} RESTART IDENTITY")
            if await _fingerprint(connection) != self._reference:
                return False
        finally:
            await connection.close()
        if self._cluster is not None:
            # A worker must still take connections to its copy (a test may have refused them).
            for host, port in self._cluster.workers:
                worker = await asyncpg.connect(with_node(self.url(name), host, port))
                await worker.close()
        return True

    async def drop(self, name: str) -> None:
        await drop_database(self._server_url, name, self._cluster)

    async def close(self) -> None:
        while self._spares:
            await self.drop(self._spares.pop())


# A TRUNCATE of a distributed table locks every shard and commits on every worker: about
# 0.15 s a table, most of a test's teardown on Citus, where a DELETE of a test's few rows
# takes milliseconds. Tables holding more are truncated.
_FEW_ROWS = 10_000
_DISTRIBUTED_TABLES = (
    "SELECT format('%I', c.relname) AS name"
    " FROM pg_dist_partition AS p JOIN pg_class AS c ON c.oid = p.logicalrelid"
)


async def _delete_few_distributed_rows(connection: asyncpg.Connection, names: list[str]) -> list[str]:
    """Empty the distributed tables among `names` that hold few rows; the rest, to truncate."""
    distributed = {row["name"] for row in await connection.fetch(_DISTRIBUTED_TABLES)} & set(names)
    if not distributed:
        return names
    ordered = sorted(distributed)
    counts = await connection.fetchrow(
        "SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in ordered)
    )
    assert counts is not None
    few = [name for name, count in zip(ordered, counts, strict=True) if count <= _FEW_ROWS]
    async with connection.transaction():
        for name in few:
            await connection.execute(f"DELETE FROM {name}")
    return [name for name in names if name not in few]


async def _no_other_sessions(connection: asyncpg.Connection) -> None:
    others = await connection.fetch(_OTHER_SESSIONS)
    assert not others, [tuple(row) for row in others]
