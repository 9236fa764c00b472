"""Throwaway databases on every engine the tests and the benchmarks run on.

Plain PostgreSQL and TimescaleDB need only CREATE DATABASE. A Citus coordinator with workers
needs what a DBA does for each new database there: the extension on every node and the nodes
registered, because Citus keeps its node list per database. The service's migrations do the
rest (distributing readings) when it starts on the new database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support import eventually


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def with_node(url: str, host: str, port: int) -> str:
    """The same URL (user, password, database) pointing at another server."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{address}" if credentials else address))


@dataclass(frozen=True)
class CitusCluster:
    """The nodes of a Citus coordinator's cluster, as its own database registers them."""

    coordinator: tuple[str, int]
    workers: list[tuple[str, int]]


async def detect_citus(server_url: str) -> CitusCluster | None:
    """The cluster when the server is a Citus coordinator with active workers, else None."""
    admin = await asyncpg.connect(server_url)
    try:
        if not await _has_extension(admin, "citus"):
            return None
        workers = await admin.fetch(
            "SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY 2"
        )
        coordinator = await admin.fetchrow("SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0")
    finally:
        await admin.close()
    if not workers or coordinator is None:
        return None
    return CitusCluster(
        coordinator=(coordinator["nodename"], coordinator["nodeport"]),
        workers=[(row["node_name"], row["node_port"]) for row in workers],
    )


async def _set_up_citus(url: str, cluster: CitusCluster) -> None:
    """The extension on every node, then the coordinator and the workers registered.

    The coordinator's CREATE DATABASE has created the database on the workers too
    (citus.enable_create_database_propagation).
    """
    for host, port in cluster.workers:
        worker = await asyncpg.connect(with_node(url, host, port))
        try:
            await worker.execute("CREATE EXTENSION IF NOT EXISTS citus")
        finally:
            await worker.close()
    coordinator = await asyncpg.connect(url)
    try:
        await coordinator.execute("CREATE EXTENSION IF NOT EXISTS citus")
        await coordinator.execute("SELECT citus_set_coordinator_host($1, $2)", *cluster.coordinator)
        for host, port in cluster.workers:
            await coordinator.execute("SELECT citus_add_node($1, $2)", host, port)
    finally:
        await coordinator.close()


async def _drop_database(server_url: str, name: str, propagate: bool = True) -> None:
    """Drop a database on the server at server_url, retrying while it is still in use."""
    settings = {} if propagate else {"citus.enable_create_database_propagation": "off"}
    admin = await asyncpg.connect(server_url, server_settings=settings)
    try:

        async def dropped() -> None:
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except asyncpg.ObjectInUseError as error:
                raise AssertionError(str(error)) from error

        # FORCE waits 5 s for the sessions it ends; a Citus maintenance daemon may outlast that.
        await eventually(dropped, within=30.0)
    finally:
        await admin.close()


async def create_database(server_url: str, name: str, cluster: CitusCluster | None) -> str:
    """A new database `name` on the server, set up for the cluster if any; its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    if cluster is not None:
        try:
            await _set_up_citus(url, cluster)
        except BaseException:
            await drop_database(server_url, name, cluster)
            raise
    return url


async def drop_database(server_url: str, name: str, cluster: CitusCluster | None) -> None:
    if cluster is None:
        await _drop_database(server_url, name)
        return
    # Each node drops its own copy: Citus's propagated drop fails when a worker's maintenance
    # daemon is still in the database, and a retry of it then fails on the workers it has
    # already dropped the database on.
    for host, port in [cluster.coordinator, *cluster.workers]:
        await _drop_database(with_node(server_url, host, port), name, propagate=False)


@asynccontextmanager
async def throwaway_database(server_url: str, name: str, cluster: CitusCluster | None) -> AsyncIterator[str]:
    """A new database `name` on the server (on each node of `cluster`), dropped afterwards."""
    url = await create_database(server_url, name, cluster)
    try:
        yield url
    finally:
        await drop_database(server_url, name, cluster)


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


async def _has_extension(connection: asyncpg.Connection, name: str) -> bool:
    found: bool = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)", name
    )
    return found


async def _fingerprint(connection: asyncpg.Connection) -> str:
    parts = [await connection.fetchval(_SCHEMA_FINGERPRINT)]
    if await _has_extension(connection, "timescaledb"):
        parts.append(await connection.fetchval(_TIMESCALEDB_FINGERPRINT))
    if await _has_extension(connection, "citus"):
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
            if await _has_extension(connection, "timescaledb"):
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
