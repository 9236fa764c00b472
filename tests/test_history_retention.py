"""History retention: expired entries vanish, newer ones and paging stay, on either engine.

On plain PostgreSQL a background task deletes expired entries in small batches; where
TimescaleDB is enabled, query_history is a hypertable whose expired chunks are dropped by a
retention policy (or by the task, under TimescaleDB's Apache-2-only edition). The tests adapt
to the engine the database offers.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import psutil
import pytest

from tests.conftest import TEST_POOL, new_embedded_postgres
from tests.server_process import serve_on, stop
from tests.support import eventually, postmaster_pid, start_again, stop_immediately
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.history_retention import (
    RetentionMethod,
    history_retention,
    retention_method,
)
from timeseries_aggregation.storage.query_history import list_history
from timeseries_aggregation.storage.schema import apply_migrations, migration_scripts

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )

RETENTION = timedelta(days=30)
# Well past the retention, also for TimescaleDB, which drops a chunk (up to a day of
# entries) only once all of it has expired.
EXPIRED = timedelta(days=40)
KEPT = timedelta(days=20)
# Rounds follow each other quickly in tests; the service waits a minute between them.
FAST_ROUNDS = 0.05
RETENTION_LOGGER = "timeseries_aggregation.storage.history_retention"


@pytest.fixture
def method(database: Database) -> RetentionMethod:
    return retention_method(database.capabilities)


async def insert_history(connection: asyncpg.Connection, series_id: str, age: timedelta) -> int:
    """A history entry recorded `age` ago, as a query then would have; returns its id."""
    entry_id: int = await connection.fetchval(
        """
        INSERT INTO query_history (
            query_time, series_id, granularity, time_zone, page_size, continued_page, bucket_count
        )
        VALUES (now() - $2::interval, $1, 'monthly', 'UTC', 10, false, 0)
        RETURNING id
        """,
        series_id,
        age,
    )
    return entry_id


async def run_query(stub: Stub, series_id: str) -> None:
    """A query, recorded, of a series put in the catalog for it."""
    await stub.UpdateSeries(pb.UpdateSeriesRequest(series=pb.Series(series_id=series_id, labels={"a": "b"})))
    await stub.QueryAggregates(
        pb.QueryAggregatesRequest(series_id=series_id, granularity=pb.GRANULARITY_MONTHLY)
    )


async def history(stub: Stub, page_size: int = 7) -> list[pb.QueryHistoryEntry]:
    """Every entry ListQueryHistory returns, page after page."""
    entries: list[pb.QueryHistoryEntry] = []
    token = ""
    while True:
        page = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=page_size, page_token=token))
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


async def series_in_history(connection: asyncpg.Connection) -> set[str]:
    return {row["series_id"] for row in await connection.fetch("SELECT series_id FROM query_history")}


async def retention_policies(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    """drop_after and schedule_interval of every TimescaleDB retention policy on query_history."""
    rows: list[asyncpg.Record] = await connection.fetch(
        """
        SELECT (config ->> 'drop_after')::interval AS drop_after, schedule_interval
        FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_retention' AND hypertable_name = 'query_history'
        """
    )
    return rows


async def test_entries_older_than_the_retention_vanish_and_newer_ones_stay(
    database: Database, stub: Stub, sql: asyncpg.Connection
) -> None:
    for number in range(3):
        await insert_history(sql, f"expired-{number}", EXPIRED)
    await insert_history(sql, "twenty-days-old", KEPT)
    await run_query(stub, "just-now")

    async with history_retention(database, RETENTION, round_interval_seconds=FAST_ROUNDS):

        async def only_newer_entries_left() -> None:
            assert {entry.series_id for entry in await history(stub)} == {"twenty-days-old", "just-now"}

        await eventually(only_newer_entries_left)


async def test_entries_that_expire_later_are_removed_by_a_later_round(
    database: Database, stub: Stub, sql: asyncpg.Connection, method: RetentionMethod
) -> None:
    if method is RetentionMethod.RETENTION_POLICY:
        pytest.skip("TimescaleDB runs the retention policy hourly, not the service")
    async with history_retention(database, RETENTION, round_interval_seconds=FAST_ROUNDS, batch_size=3):
        await run_query(stub, "kept")
        # More than one batch (on plain PostgreSQL), while the task is already running.
        for number in range(10):
            await insert_history(sql, f"expired-{number}", EXPIRED)

        async def expired_entries_gone() -> None:
            assert await series_in_history(sql) == {"kept"}

        await eventually(expired_entries_gone)


async def test_zero_keeps_every_entry(database: Database, stub: Stub, sql: asyncpg.Connection) -> None:
    await insert_history(sql, "a-century-old", timedelta(days=36_500))
    await insert_history(sql, "expired", EXPIRED)

    async with history_retention(database, timedelta(0), round_interval_seconds=FAST_ROUNDS):
        await run_query(stub, "just-now")
        assert {entry.series_id for entry in await history(stub)} == {"a-century-old", "expired", "just-now"}
        if database.capabilities.history_hypertable:
            assert await retention_policies(sql) == []


async def test_paging_over_history_stays_consistent_while_entries_vanish(
    database: Database, stub: Stub, sql: asyncpg.Connection
) -> None:
    # Expired and current entries interleaved by id, as they are after a clock change or an import.
    for number in range(12):
        await run_query(stub, f"current-{number}")
        await insert_history(sql, f"expired-{number}", EXPIRED)
    first = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=5))

    async with history_retention(database, RETENTION, round_interval_seconds=FAST_ROUNDS):

        async def expired_entries_gone() -> None:
            assert all(series.startswith("current-") for series in await series_in_history(sql))

        await eventually(expired_entries_gone)
        seen = list(first.entries)
        token = first.next_page_token
        while token:
            page = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(page_size=5, page_token=token))
            seen.extend(page.entries)
            token = page.next_page_token

    ids = [entry.id for entry in seen]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    # Every current entry exactly once, in order; of the expired ones only those the first
    # page showed before they vanished.
    assert [entry.series_id for entry in seen if entry.series_id.startswith("current-")] == [
        f"current-{number}" for number in range(11, -1, -1)
    ]
    assert [entry.series_id for entry in seen[5:] if entry.series_id.startswith("expired-")] == []


async def test_replicas_enforcing_retention_together_agree(
    database: Database,
    database_url: str,
    sql: asyncpg.Connection,
    method: RetentionMethod,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await sql.execute(
        """
        INSERT INTO query_history (
            query_time, series_id, granularity, time_zone, page_size, continued_page, bucket_count
        )
        SELECT now() - INTERVAL '40 days', 'expired-' || n, 'monthly', 'UTC', 10, false, 0
        FROM generate_series(1, 3000) AS n
        """
    )
    await insert_history(sql, "kept", KEPT)
    stop_replicas = asyncio.Event()

    async def replica(replica_database: Database) -> None:
        async with history_retention(
            replica_database, RETENTION, round_interval_seconds=FAST_ROUNDS, batch_size=100
        ):
            await stop_replicas.wait()

    async with open_database(database_url, TEST_POOL) as other_database:
        replicas = [asyncio.create_task(replica(each)) for each in (database, other_database)]
        try:

            async def expired_entries_gone() -> None:
                assert await series_in_history(sql) == {"kept"}

            await eventually(expired_entries_gone, within=30)
            if method is RetentionMethod.RETENTION_POLICY:
                assert [row["drop_after"] for row in await retention_policies(sql)] == [RETENTION]
        finally:
            stop_replicas.set()
            await asyncio.gather(*replicas)
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


async def test_timescaledb_policy_follows_the_retention_of_each_start(
    database: Database, sql: asyncpg.Connection, method: RetentionMethod
) -> None:
    if method is not RetentionMethod.RETENTION_POLICY:
        pytest.skip("the database has no TimescaleDB retention policies")
    async with history_retention(database, RETENTION):
        assert [tuple(row) for row in await retention_policies(sql)] == [(RETENTION, timedelta(hours=1))]
    async with history_retention(database, timedelta(hours=12)):
        assert [tuple(row) for row in await retention_policies(sql)] == [
            (timedelta(hours=12), timedelta(hours=1))
        ]
    async with history_retention(database, timedelta(minutes=20)):
        assert [tuple(row) for row in await retention_policies(sql)] == [
            (timedelta(minutes=20), timedelta(minutes=20))
        ]
    async with history_retention(database, timedelta(0)):
        assert await retention_policies(sql) == []


async def test_new_chunks_are_no_longer_than_the_retention(
    database: Database, sql: asyncpg.Connection, method: RetentionMethod
) -> None:
    if method is RetentionMethod.DELETE_BATCHES:
        pytest.skip("query_history is not a hypertable here")

    async def chunk_interval() -> timedelta:
        interval: timedelta = await sql.fetchval(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'query_history'"
        )
        return interval

    assert await chunk_interval() == timedelta(days=1)
    # An entry outlives the retention by at most one chunk.
    async with history_retention(database, timedelta(hours=12), round_interval_seconds=FAST_ROUNDS):
        assert await chunk_interval() == timedelta(hours=12)
    async with history_retention(database, RETENTION, round_interval_seconds=FAST_ROUNDS):
        assert await chunk_interval() == timedelta(days=1)


async def test_database_away_is_logged_once_and_retried_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server of its own to stop for real; with no TimescaleDB loaded, the task does the work.
    caplog.set_level(logging.DEBUG, logger=RETENTION_LOGGER)

    def retention_records(level: int) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == RETENTION_LOGGER and r.levelno == level]

    with new_embedded_postgres() as server:
        try:
            async with (
                open_database(server.get_uri(), TEST_POOL) as database,
                history_retention(database, RETENTION, round_interval_seconds=FAST_ROUNDS),
            ):
                await asyncio.to_thread(stop_immediately, server)

                async def several_rounds_failed() -> None:
                    failed = [r for r in retention_records(logging.DEBUG) if "round failed" in r.getMessage()]
                    assert len(failed) >= 3

                await eventually(several_rounds_failed)
                [warning] = retention_records(logging.WARNING)
                assert "DatabaseUnavailableError" in warning.getMessage()

                await asyncio.to_thread(start_again, server)
                connection = await asyncpg.connect(server.get_uri())  # pg_ctl -w waited for it
                try:
                    await insert_history(connection, "expired", EXPIRED)

                    async def deleted_again() -> None:
                        assert await series_in_history(connection) == set()

                    await eventually(deleted_again, within=15)
                finally:
                    await connection.close()
            assert len(retention_records(logging.WARNING)) == 1
            assert any("again" in record.getMessage() for record in retention_records(logging.INFO))
        finally:
            # The fixture stops only the postmaster it started, not the one started again.
            pid = postmaster_pid(server)
            if pid is not None and psutil.pid_exists(pid):
                stop_immediately(server)


@pytest.mark.fresh_database
async def test_migration_keeps_existing_history_its_ids_and_paging(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        # The schema as the previous release left it, holding history of the last ten days.
        await connection.execute(
            "CREATE TABLE schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        earlier = [(version, script) for version, script in migration_scripts() if version < "0004"]
        for version, script in earlier:
            await connection.execute(script)
            await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        for number in range(40):
            await insert_history(connection, f"meter-{number}", timedelta(hours=6 * (40 - number)))
        before = await connection.fetch("SELECT * FROM query_history ORDER BY id")
        columns = ", ".join(before[0].keys())

        applied = await apply_migrations(connection)

        assert applied == [version for version, _ in migration_scripts() if version >= "0004"]
        # Later migrations add columns; the rows keep every value they had.
        assert await connection.fetch(f"SELECT {columns} FROM query_history ORDER BY id") == before
        newest_id = await insert_history(connection, "after-the-migration", timedelta(0))
        assert newest_id > before[-1]["id"]
    finally:
        await connection.close()
    async with open_database(database_url, TEST_POOL) as database:
        listed: list[int] = []
        after: int | None = None
        while True:
            page = await list_history(database, PageRequest(page_size=7, after=after), None)
            listed.extend(entry.id for entry in page.items)
            if not page.has_more:
                break
            after = page.items[-1].id
    assert listed == [newest_id, *(row["id"] for row in reversed(before))]


async def test_the_server_enforces_the_configured_retention(
    database_url: str, sql: asyncpg.Connection, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    await insert_history(sql, "expired", EXPIRED)
    await insert_history(sql, "kept", KEPT)

    process, _ = await serve_on(database_url, tmp_path / "server.log", cleanup, HISTORY_RETENTION="30d")

    async def expired_entry_gone() -> None:
        assert await series_in_history(sql) == {"kept"}

    await eventually(expired_entry_gone, within=30)
    assert await stop(process) == 0
    assert "history retention" in (tmp_path / "server.log").read_text()
