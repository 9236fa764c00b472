"""Prometheus metrics of one server, in a registry of its own, served over HTTP."""

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from timeseries_aggregation.config import split_host_port
from timeseries_aggregation.errors import DatabaseUnavailableError
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.schema import newest_migration

logger = logging.getLogger(__name__)

NAMESPACE = "timeseries_aggregation"
# From a one-millisecond query to a bulk ingest stream of several minutes.
RPC_SECONDS_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
# Up to the 50,000 readings a message may carry.
MESSAGE_READINGS_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000)
_MIGRATION_NUMBER = re.compile(r"\d+")


class PoolState(Protocol):
    """What an asyncpg.Pool tells about its connections."""

    def get_size(self) -> int: ...

    def get_idle_size(self) -> int: ...

    def get_max_size(self) -> int: ...


class PoolCollector(Collector):
    """Connections in use, idle and allowed, per pool, read from the pools at each scrape.

    Scrapes run in the metrics server's thread; the pool methods only read counters, so a
    scrape may see a state a moment old but never changes or blocks the event loop's pools.
    """

    def __init__(self, pools: Mapping[str, PoolState], waiting: Callable[[], Mapping[str, int]]) -> None:
        self._pools = dict(pools)
        self._waiting = waiting

    def collect(self) -> Iterable[Metric]:
        prefix = f"{NAMESPACE}_db_pool_connections"
        in_use = GaugeMetricFamily(f"{prefix}_in_use", "Connections lent out by the pool.", labels=["pool"])
        idle = GaugeMetricFamily(f"{prefix}_idle", "Open connections waiting in the pool.", labels=["pool"])
        maximum = GaugeMetricFamily(f"{prefix}_max", "Connections the pool may open.", labels=["pool"])
        waiting = GaugeMetricFamily(
            f"{NAMESPACE}_db_pool_waiting_calls", "Calls waiting for a connection.", labels=["pool"]
        )
        for name, count in self._waiting().items():
            waiting.add_metric([name], count)
        for name, pool in self._pools.items():
            open_connections, idle_connections = pool.get_size(), pool.get_idle_size()
            in_use.add_metric([name], open_connections - idle_connections)
            idle.add_metric([name], idle_connections)
            maximum.add_metric([name], pool.get_max_size())
        return [in_use, idle, maximum, waiting]


class ServiceMetrics:
    """Every metric one server exports, in its own registry (several servers, one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        rpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        # Names and labels of go-grpc-middleware's Prometheus interceptors, so their
        # dashboards and alerts work as they are.
        self.rpcs_started = Counter(
            "grpc_server_started", "RPCs started on the server.", rpc_labels, registry=self.registry
        )
        self.rpcs_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status code.",
            [*rpc_labels, "grpc_code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, in seconds.",
            rpc_labels,
            buckets=RPC_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.readings_ingested = Counter(
            f"{NAMESPACE}_readings_ingested",
            "Readings of IngestReadings streams that committed.",
            registry=self.registry,
        )
        self.rows_written = Counter(
            f"{NAMESPACE}_rows_written",
            "Rows inserted or updated in the readings table by committed IngestReadings streams.",
            registry=self.registry,
        )
        self.ingest_message_readings = Histogram(
            f"{NAMESPACE}_ingest_message_readings",
            "Readings per IngestReadings message received, committed or not.",
            buckets=MESSAGE_READINGS_BUCKETS,
            registry=self.registry,
        )
        # Reasons and methods come from fixed sets (observability.refusals, the registered
        # methods): never a key, a key's name or a peer, so the series stay few.
        self.refused_calls = Counter(
            f"{NAMESPACE}_refused_calls",
            "Calls refused by admission control, authentication or a key's limits, by reason.",
            ["reason", "grpc_service", "grpc_method"],
            registry=self.registry,
        )
        self._schema_migration = Gauge(
            f"{NAMESPACE}_schema_migration_version",
            "Number of the newest migration in schema_migrations at start-up; the label names it.",
            ["migration"],
            registry=self.registry,
        )

    def watch_pools(self, pools: Mapping[str, PoolState], waiting: Callable[[], Mapping[str, int]]) -> None:
        """Export the connection counts of these pools, and the calls waiting on them, by name."""
        self.registry.register(PoolCollector(pools, waiting))

    def set_schema_migration(self, version: str) -> None:
        """Record the newest applied migration, e.g. '0003_query_history_caller' as 3."""
        number = _MIGRATION_NUMBER.match(version)
        self._schema_migration.labels(migration=version).set(int(number.group()) if number else 0)

    async def read_schema_migration(self, database: Database) -> None:
        """Record the newest migration the database has applied (a warning if it cannot tell)."""
        try:
            async with database.query_connection() as connection:
                version = await newest_migration(connection)
        except DatabaseUnavailableError:
            logger.warning("metrics: the schema migration version could not be read")
            return
        if version is not None:
            self.set_schema_migration(version)


@asynccontextmanager
async def metrics_http_server(registry: CollectorRegistry, address: str) -> AsyncIterator[int]:
    """Serve the registry at http://HOST:PORT/metrics from a thread; yields the bound port."""
    host, port = split_host_port(address)
    try:
        server, thread = await asyncio.to_thread(start_http_server, port, host, registry)
    except OSError as error:
        raise OSError(error.errno, f"cannot serve metrics on {address}: {error.strerror}") from error
    try:
        yield server.server_port
    finally:
        # shutdown() waits for the serving loop, which looks every half second.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await asyncio.to_thread(thread.join)
