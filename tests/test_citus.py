"""Citus: readings distributed by series over the workers, streams atomic across them, one
worker per query, and a worker that goes away.

The first tests run on every engine; where the test server is a Citus coordinator with
workers they also check where the rows went. The others need such a coordinator and skip
elsewhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from bench.throwaway_databases import CitusCluster, with_node
from tests.support import (
    batches,
    eventually,
    hourly_readings,
    ingest,
    reading,
    service_transactions_waiting,
    ts,
)
from tests.tcp_proxy import FreezableProxy
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.aggregation import AggregateQuery, TimeRange
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.domain.query_plan import (
    FirstReading,
    FirstReadingProbe,
    PagePlan,
    plan_series_page,
)
from timeseries_aggregation.domain.series import make_selector
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.query_pages import portfolio_page_plan
from timeseries_aggregation.storage.aggregate_sql import (
    first_reading_sql,
    portfolio_page_sql,
    series_page_sql,
)
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.readings import COPY_CHUNK_READINGS

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

SERIES = [f"meter-{number:03}" for number in range(64)]
HOURS = 400  # 64 series x 400 hours: more than one COPY chunk


def many_series(quantity_kwh: float) -> list[pb.Reading]:
    return [
        item for series_id in SERIES for item in hourly_readings(series_id, "2025-01-01", HOURS, quantity_kwh)
    ]


async def stored_values(database: Database) -> dict[float, int]:
    """How many stored readings hold each value."""
    async with database.query_connection() as connection:
        rows = await connection.fetch("SELECT quantity_kwh, count(*) FROM readings GROUP BY 1")
    return {row[0]: row[1] for row in rows}


async def rows_per_worker(database_url: str, database: Database) -> dict[tuple[str, int], int]:
    """Readings stored in each worker's shards, counted on the worker itself."""
    async with database.query_connection() as connection:
        shards = await connection.fetch(
            "SELECT shard_name, nodename, nodeport FROM citus_shards WHERE table_name = 'readings'::regclass"
        )
    counts: dict[tuple[str, int], int] = {}
    for shard in shards:
        node = (shard["nodename"], shard["nodeport"])
        worker = await asyncpg.connect(with_node(database_url, *node))
        try:
            rows: int = await worker.fetchval(f'SELECT count(*) FROM "{shard["shard_name"]}"')
        finally:
            await worker.close()
        counts[node] = counts.get(node, 0) + rows
    return counts


async def test_readings_are_distributed_by_series_over_every_worker(
    stub: Stub, database: Database, database_url: str, citus_cluster: CitusCluster | None
) -> None:
    await ingest(stub, batches(many_series(1.0), 5_000))
    # Re-sent over existing keys, with a repeated key within the stream: the last write wins.
    resent = many_series(2.0)
    resent.append(reading(SERIES[0], "2025-01-01", 3.0))
    response = await ingest(stub, batches(resent, 5_000))
    assert response.series_count == len(SERIES)
    total = len(SERIES) * HOURS
    assert await stored_values(database) == {2.0: total - 1, 3.0: 1}

    if citus_cluster is None:
        assert not database.capabilities.distributed
        return
    assert database.capabilities.worker_count == len(citus_cluster.workers)
    # Citus nodes do not preload TimescaleDB, so migration 0002 left readings a plain table.
    assert not database.capabilities.hypertables
    async with database.query_connection() as connection:
        distribution = await connection.fetchrow(
            "SELECT partmethod::text AS method, column_to_column_name(logicalrelid, partkey) AS column_name"
            " FROM pg_dist_partition WHERE logicalrelid = 'readings'::regclass"
        )
    assert distribution is not None
    assert (distribution["method"], distribution["column_name"]) == ("h", "series_id")
    per_worker = await rows_per_worker(database_url, database)
    assert set(per_worker) == set(citus_cluster.workers)
    assert all(rows > 0 for rows in per_worker.values())
    assert sum(per_worker.values()) == total


async def test_a_failing_stream_stores_nothing_on_any_worker(
    stub: Stub, database: Database, database_url: str, citus_cluster: CitusCluster | None
) -> None:
    await ingest(stub, batches(many_series(1.0), 5_000))
    # Chunks of the second stream reach the workers before its last message turns out invalid.
    invalid = pb.IngestReadingsRequest(readings=[reading(SERIES[0], "2025-01-01", math.nan)])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest(stub, [*batches(many_series(2.0), 5_000), invalid])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await stored_values(database) == {1.0: len(SERIES) * HOURS}
    if citus_cluster is not None:
        assert sum((await rows_per_worker(database_url, database)).values()) == len(SERIES) * HOURS


@pytest.fixture
def cluster(citus_cluster: CitusCluster | None) -> CitusCluster:
    """The Citus cluster; the test skips on any other engine."""
    if citus_cluster is None:
        pytest.skip("needs a Citus coordinator with workers as the test database server")
    return citus_cluster


async def series_workers(connection: asyncpg.Connection, series_ids: list[str]) -> dict[str, tuple[str, int]]:
    """The worker holding each series' shard, by Citus's own hash of the distribution column."""
    rows = await connection.fetch(
        "SELECT series_id, nodename, nodeport FROM unnest($1::text[]) AS series_id"
        " JOIN citus_shards ON shardid = get_shard_id_for_distribution_column('readings', series_id)",
        series_ids,
    )
    return {row["series_id"]: (row["nodename"], row["nodeport"]) for row in rows}


def plan_tasks(plan: list[str]) -> tuple[list[int], list[tuple[str, int]]]:
    """The Task Count of each Citus scan in an EXPLAIN text, and the node of each task shown."""
    counts = [int(match[1]) for line in plan if (match := re.search(r"Task Count: (\d+)", line))]
    nodes = [
        (match[1], int(match[2]))
        for line in plan
        if (match := re.search(r"Node: host=(\S+) port=(\d+)", line))
    ]
    return counts, nodes


async def test_a_query_of_one_series_runs_on_the_one_worker_holding_it(
    cluster: CitusCluster, database: Database, sql: asyncpg.Connection
) -> None:
    series_id = SERIES[0]
    [worker] = (await series_workers(sql, [series_id])).values()
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    time_zone = "Europe/Berlin"
    for granularity in Granularity:
        for continued in (False, True):
            # The statement the service sends on Citus (the history is written by a second
            # statement there) and its arguments, explained on a connection of the service's
            # own pool.
            query = AggregateQuery(series_id, granularity, TimeRange(start, end), time_zone)
            page = PageRequest(100, start if continued else None)
            planned = plan_series_page(query, page)
            statements = []
            if isinstance(planned, FirstReadingProbe):
                # A month of more buckets than a page: its first reading is asked for first.
                statements.append(first_reading_sql(planned))
                planned = plan_series_page(query, page, FirstReading(True, planned.start, None))
            assert isinstance(planned, PagePlan)
            statements.append(series_page_sql(planned, None, rollups=True, guarded=False))
            for statement, arguments in statements:
                async with database.query_connection() as connection:
                    rows = await connection.fetch("EXPLAIN " + statement, *arguments)
                counts, nodes = plan_tasks([row[0] for row in rows])
                # The readings scan is one task, on the series' worker, and there is nothing else.
                assert counts == [1], (granularity, continued, counts)
                assert nodes == [worker], (granularity, continued, nodes)

    # A statement over every series fans out to every shard, on every worker.
    await sql.execute("SET citus.explain_all_tasks TO on")
    counts, nodes = plan_tasks([row[0] for row in await sql.fetch("EXPLAIN SELECT count(*) FROM readings")])
    assert len(counts) == 1
    assert counts[0] > 1
    assert len(nodes) == counts[0]
    assert set(nodes) == set(cluster.workers)


async def test_a_query_over_selected_series_runs_on_every_worker_at_once(
    cluster: CitusCluster, database: Database, sql: asyncpg.Connection
) -> None:
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    query = AggregateQuery(
        "",
        Granularity.DAY_OF_MONTH,
        TimeRange(start, end),
        "Europe/Berlin",
        selector=make_selector((), {"site": "berlin-01"}),
        group_by=("customer",),
    )
    plan = await portfolio_page_plan(database, query, PageRequest(100, None))
    statement, arguments = portfolio_page_sql(plan, guarded=False)
    async with database.query_connection() as connection:
        await connection.execute("SET citus.explain_all_tasks TO on")
        try:
            rows = await connection.fetch("EXPLAIN " + statement, *arguments)
        finally:
            await connection.execute("RESET citus.explain_all_tasks")
    counts, nodes = plan_tasks([row[0] for row in rows])
    # The aggregation is one distributed step, a task per shard, on both workers (catalog and
    # readings joined on each); what follows (ordering the groups, the page's limit) works on
    # its small intermediate result, one task each.
    widest = max(counts)
    assert widest > 1
    assert [count for count in counts if count != widest] == [1] * (len(counts) - 1)
    assert set(cluster.workers) <= set(nodes)


# Far above the time a refused connection takes to reach the client (well under a second),
# below the test pool's 10 s statement timeout: a hang shows as DEADLINE_EXCEEDED.
CALL_TIMEOUT_SECONDS = 5.0
# The service's own message for an unavailable database: no host, port or database name.
UNAVAILABLE_MESSAGE = "the database is unavailable; retry later"
# What an ingest stream that failed so before its commit adds.
NOTHING_STORED = "(nothing of this stream was stored; re-sending it is safe)"


@asynccontextmanager
async def refusing_connections(
    server_url: str, database_url: str, worker: tuple[str, int]
) -> AsyncIterator[None]:
    """The worker refuses connections to the test's database until the block ends.

    To the coordinator this is a worker that went away: its open connections there end
    (as when the worker restarts) and new ones are refused, so every statement that needs a
    shard on it fails in Citus's connection handling, as with a stopped worker. Unlike stopping
    the worker's server, it leaves the cluster's other databases (other tests') alone.
    """
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(with_node(server_url, *worker))
    try:
        # Without this Citus refuses ALTER DATABASE on a worker: a local change here.
        await admin.execute("SET citus.enable_ddl_propagation TO off")
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            # The coordinator's cached connections to the worker, and its maintenance daemon.
            await admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


def daily_query(series_id: str) -> pb.QueryAggregatesRequest:
    return pb.QueryAggregatesRequest(
        series_id=series_id,
        granularity=pb.GRANULARITY_DAY_OF_MONTH,
        start_time=ts("2025-01-01"),
        end_time=ts("2025-01-03"),
    )


async def daily_totals(stub: Stub, series_id: str) -> list[float]:
    response = await stub.QueryAggregates(daily_query(series_id), timeout=CALL_TIMEOUT_SECONDS)
    return [bucket.total_quantity_kwh for bucket in response.buckets]


# A stream over stored readings meets the worker in the upsert path; one of new readings in
# the direct COPY, where Citus reports a failure without a specific error code.
@pytest.mark.parametrize("first_day", ["2025-01-01", "2026-01-01"], ids=["overwriting", "new-readings"])
async def test_a_worker_that_goes_away_makes_its_series_unavailable_until_it_returns(
    first_day: str,
    cluster: CitusCluster,
    stub: Stub,
    database: Database,
    database_url: str,
    postgres_url: str,
    sql: asyncpg.Connection,
) -> None:
    await ingest(stub, batches(many_series(1.0), 5_000))
    total = len(SERIES) * HOURS
    async with database.query_connection() as connection:
        workers = await series_workers(connection, SERIES)
    away = cluster.workers[0]
    on_away = [series_id for series_id in SERIES if workers[series_id] == away]
    elsewhere = [series_id for series_id in SERIES if workers[series_id] != away]
    # A whole COPY chunk for the remaining worker alone, then readings for the one away.
    hours = -(-COPY_CHUNK_READINGS // len(elsewhere))
    first = [item for series_id in elsewhere for item in hourly_readings(series_id, first_day, hours, 2.0)]
    then = [item for series_id in on_away for item in hourly_readings(series_id, first_day, HOURS, 2.0)]

    async def chunk_written() -> None:
        assert await service_transactions_waiting(sql) == 1

    async def stream() -> AsyncIterator[pb.IngestReadingsRequest]:
        for request in batches(first, 5_000):
            yield request
        # The first chunk is in the stream's transaction on the remaining worker.
        await eventually(chunk_written)
        for request in batches(then, 5_000):
            yield request

    stored_per_worker = await rows_per_worker(database_url, database)

    async with refusing_connections(postgres_url, database_url, away):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await daily_totals(stub, on_away[0])
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == UNAVAILABLE_MESSAGE

        # The failure of the second chunk takes the first back on the remaining worker too.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IngestReadings(stream(), timeout=CALL_TIMEOUT_SECONDS)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == f"{UNAVAILABLE_MESSAGE} {NOTHING_STORED}"

        # A series on the remaining worker needs nothing of the one away.
        assert await daily_totals(stub, elsewhere[0]) == [24.0, 24.0]

    # Back without a restart of the service: its pools reconnect.
    assert await eventually(lambda: daily_totals(stub, on_away[0])) == [24.0, 24.0]
    assert await stored_values(database) == {1.0: total}
    assert await rows_per_worker(database_url, database) == stored_per_worker
    await ingest(stub, batches(many_series(3.0), 5_000))
    assert await stored_values(database) == {3.0: total}


@pytest.fixture
async def proxied_worker(
    cluster: CitusCluster, database_url: str
) -> AsyncIterator[tuple[tuple[str, int], FreezableProxy]]:
    """The first worker, registered in the test's database behind a proxy the test can cut.

    Only this database reaches the worker through the proxy; a cut is, to its coordinator
    sessions, the worker's server dying (every connection to it closed, new ones refused), and
    the cluster's other databases (other tests') never notice. Registered again at its own
    address afterwards, so the database is as the next test expects it. Set up before the
    service's pools, whose sessions then reach the worker only through the proxy.
    """
    worker = cluster.workers[0]
    async with FreezableProxy(*worker).running() as proxy:
        admin = await asyncpg.connect(database_url)
        try:
            node = await admin.fetchval("SELECT nodeid FROM pg_dist_node WHERE nodeport = $1", worker[1])
            await admin.execute("SELECT citus_update_node($1, '127.0.0.1', $2)", node, proxy.port)
            try:
                yield worker, proxy
            finally:
                proxy.restore()
                await admin.execute("SELECT citus_update_node($1, $2, $3)", node, *worker)
        finally:
            await admin.close()


# The stream of the issue: two messages, 40 series x 1,000 readings, a COPY chunk each.
LOST_SERIES = [f"lost-{number:02}" for number in range(40)]


def lost_worker_stream(quantity_kwh: float) -> list[pb.IngestReadingsRequest]:
    readings = [item for series_id in LOST_SERIES for item in hourly_readings(series_id, "2025-03-01", 1_000)]
    for item in readings:
        item.quantity_kwh = quantity_kwh
    return batches(readings, len(readings) // 2)


async def stored_state(sql: asyncpg.Connection) -> tuple[list[tuple[object, ...]], ...]:
    """What the stream may change: readings by value, the catalog's rows, the rollups' figures."""
    return (
        [
            tuple(row)
            for row in await sql.fetch("SELECT quantity_kwh, count(*) FROM readings GROUP BY 1 ORDER BY 1")
        ],
        [tuple(row) for row in await sql.fetch("SELECT * FROM series ORDER BY series_id")],
        [tuple(row) for row in await sql.fetch("SELECT count(*), sum(reading_count) FROM hourly_rollups")],
        [tuple(row) for row in await sql.fetch("SELECT count(*), sum(reading_count) FROM daily_rollups")],
    )


class LostWorkerMoment(NamedTuple):
    """Where the worker dies: when the coordinator (any session) was about to send it
    `pattern`, or `then_bytes` later either way (the upsert's answer: its RETURNING rows);
    with no pattern, before the stream or, `between_chunks`, while the stream's transaction
    waits for its second message. `overwriting`: the first message's readings are stored
    beforehand, so the stream meets a key conflict and goes on through the upsert path."""

    pattern: bytes | None = None
    then_bytes: int = 0
    overwriting: bool = False
    between_chunks: bool = False


LOST_WORKER_MOMENTS = {
    "before-the-stream": LostWorkerMoment(),
    "mid-copy": LostWorkerMoment(b"COPY public.readings_", 30_000),
    "between-chunks": LostWorkerMoment(between_chunks=True),
    "upsert-path": LostWorkerMoment(b"INSERT INTO public.readings_", overwriting=True),
    "upsert-answer": LostWorkerMoment(b"INSERT INTO public.readings_", 20_000, overwriting=True),
    "catalog-and-rollups": LostWorkerMoment(b"INTO public.series_"),
    "commit": LostWorkerMoment(b"PREPARE TRANSACTION"),
}


@pytest.mark.parametrize("moment", list(LOST_WORKER_MOMENTS))
async def test_a_worker_lost_mid_stream_is_unavailable_and_stores_nothing(
    moment: str,
    proxied_worker: tuple[tuple[str, int], FreezableProxy],
    stub: Stub,
    sql: asyncpg.Connection,
) -> None:
    _, proxy = proxied_worker
    lost = LOST_WORKER_MOMENTS[moment]
    first, second = lost_worker_stream(2.0)
    if lost.overwriting:
        await ingest(stub, [lost_worker_stream(1.0)[0]])
    before = await stored_state(sql)
    if lost.pattern is not None:
        proxy.cut_when(lost.pattern, lost.then_bytes)
    elif not lost.between_chunks:
        proxy.cut()

    async def chunk_written() -> None:
        assert await service_transactions_waiting(sql) == 1

    async def stream() -> AsyncIterator[pb.IngestReadingsRequest]:
        yield first
        if lost.between_chunks:
            await eventually(chunk_written)
            proxy.cut()
        yield second

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.IngestReadings(stream(), timeout=CALL_TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()
    assert "re-sending it is safe" in (raised.value.details() or "")

    # A query needing the worker while it is away.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daily_totals(stub, LOST_SERIES[0])
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()

    proxy.restore()
    assert await stored_state(sql) == before
    # Back: the same stream is stored whole (a client's retry of UNAVAILABLE).
    response = await eventually(
        lambda: stub.IngestReadings(iter([first, second]), timeout=CALL_TIMEOUT_SECONDS)
    )
    assert response.series_count == len(LOST_SERIES)
    assert (await stored_state(sql))[0] == [(2.0, len(LOST_SERIES) * 1_000)]
