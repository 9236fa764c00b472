"""Readings retention: expired readings vanish and newer ones stay, on either engine.

Plain PostgreSQL and Citus: a background task deletes them meter by meter. TimescaleDB: a job
drops whole chunks (run here at once with run_job instead of waiting for its schedule), or,
under the Apache-2-only edition, the task calls the job's procedure. Either way the series
catalog's figures follow in the same transaction. The tests adapt to the engine.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg
import pytest

from tests.support import catalog_matches_readings, eventually, writing_by_hand
from timeseries_aggregation.domain.batch import unix_micros
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.engine import detect_capabilities
from timeseries_aggregation.storage.policies import RETENTION_POLICY, policy_jobs
from timeseries_aggregation.storage.readings_retention import readings_retention
from timeseries_aggregation.storage.rollups import rebuild_series_rollups
from timeseries_aggregation.storage.series_catalog import SeriesTally

RETENTION = timedelta(days=365)
# Well past the retention, also for TimescaleDB, which drops a 7-day chunk only once all of it
# has expired.
EXPIRED = timedelta(days=400)
KEPT = timedelta(days=300)
FAST_ROUNDS = 0.05
RETENTION_LOGGER = "timeseries_aggregation.storage.readings_retention"


async def insert_readings(
    connection: asyncpg.Connection, series_id: str, age: timedelta, count: int = 4
) -> None:
    """`count` quarter-hourly readings of a meter, the first `age` ago, counted in the catalog as
    ingest counts them."""
    async with writing_by_hand(connection):
        times = await connection.fetch(
            "INSERT INTO readings (series_id, time, quantity_kwh) "
            "SELECT $1, date_trunc('hour', now() - $2::interval) + n * interval '15 minutes', 1.0 "
            "FROM generate_series(0, $3 - 1) AS n RETURNING time",
            series_id,
            age,
            count,
        )
        tally = SeriesTally()
        micros = [unix_micros(row["time"]) for row in times]
        tally.add(series_id, min(micros), max(micros), len(times))
        await tally.write(connection)


async def meters_with_readings(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT series_id, count(*) AS readings FROM readings GROUP BY series_id")
    return {row["series_id"]: row["readings"] for row in rows}


async def retention_jobs(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    """id and drop_after of each TimescaleDB job expiring readings."""
    if not (await detect_capabilities(connection)).job_scheduler:
        return []
    rows: list[asyncpg.Record] = await connection.fetch(
        "SELECT job_id, (config ->> 'drop_after')::interval AS drop_after FROM timescaledb_information.jobs "
        "WHERE proc_name = 'expire_readings'"
    )
    return rows


async def run_policies_now(connection: asyncpg.Connection) -> None:
    """Run the job expiring readings, if there is one, now rather than on its schedule."""
    for job in await retention_jobs(connection):
        await connection.execute("CALL run_job($1)", job["job_id"])


async def test_readings_older_than_the_retention_vanish_and_newer_ones_stay(
    database: Database, sql: asyncpg.Connection
) -> None:
    # More meters than one batch, so the plain PostgreSQL task takes several statements.
    for number in range(7):
        await insert_readings(sql, f"old-meter-{number}", EXPIRED)
    await insert_readings(sql, "both", EXPIRED)
    await insert_readings(sql, "both", KEPT)
    await insert_readings(sql, "recent", timedelta(days=1))
    # Rolled up, as ingest rolls up quarter-hourly meters: their rollups expire with them.
    for row in await sql.fetch("SELECT series_id FROM series"):
        assert await rebuild_series_rollups(database, row["series_id"])
    assert await sql.fetchval("SELECT count(*) FROM hourly_rollups WHERE series_id = 'both'") == 2

    async with readings_retention(
        database, RETENTION, round_interval_seconds=FAST_ROUNDS, meters_per_batch=3
    ):

        async def only_newer_readings_left() -> None:
            await run_policies_now(sql)
            assert await meters_with_readings(sql) == {"both": 4, "recent": 4}

        await eventually(only_newer_readings_left)
    # The catalog and the rollups follow: counts and first reading times of what is left; the
    # meters whose readings all expired stay, empty.
    await catalog_matches_readings(sql)
    assert await sql.fetchval("SELECT count(*) FROM hourly_rollups WHERE series_id = 'both'") == 1
    empty = await sql.fetch("SELECT series_id FROM series WHERE reading_count = 0 ORDER BY series_id")
    assert [row["series_id"] for row in empty] == [f"old-meter-{number}" for number in range(7)]


async def test_zero_keeps_every_reading_and_removes_the_job(
    database: Database, sql: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RETENTION_LOGGER)
    async with readings_retention(database, RETENTION, round_interval_seconds=FAST_ROUNDS):
        pass
    await insert_readings(sql, "ancient", timedelta(days=20_000))
    async with readings_retention(database, timedelta(0), round_interval_seconds=FAST_ROUNDS):
        await run_policies_now(sql)
        assert await meters_with_readings(sql) == {"ancient": 4}
        assert await retention_jobs(sql) == []
    assert "kept forever" in caplog.records[-1].getMessage()


async def test_timescaledb_job_follows_the_retention_of_each_start(
    database: Database, sql: asyncpg.Connection
) -> None:
    if database.capabilities.job_scheduler:
        # What an earlier version set up: TimescaleDB's retention policy, which would drop
        # chunks behind the catalog's back.
        await sql.execute("SELECT add_retention_policy('readings', drop_after => INTERVAL '30 days')")
    async with readings_retention(database, RETENTION):
        jobs = await retention_jobs(sql)
    if not jobs:
        pytest.skip("the database has no TimescaleDB job scheduler")
    assert [job["drop_after"] for job in jobs] == [RETENTION]
    assert await policy_jobs(sql, RETENTION_POLICY.proc_name, "readings", RETENTION_POLICY.setting) == []
    async with readings_retention(database, timedelta(days=90)):
        assert [job["drop_after"] for job in await retention_jobs(sql)] == [timedelta(days=90)]
    async with readings_retention(database, timedelta(0)):
        assert await retention_jobs(sql) == []


async def test_runs_of_the_timescaledb_procedure_at_once_take_turns_and_count_once(
    database: Database, database_url: str, sql: asyncpg.Connection
) -> None:
    """The scheduler's run, the service's and an operator's run_job may start together: each
    waits for the one before, so none fails on chunks another dropped, nor subtracts twice."""
    if not (await detect_capabilities(sql)).hypertables:
        pytest.skip("only TimescaleDB expires readings with the procedure")
    for number in range(3):
        await insert_readings(sql, f"old-meter-{number}", EXPIRED)
    await insert_readings(sql, "both", EXPIRED)
    await insert_readings(sql, "both", KEPT)
    runs = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        config = f'{{"drop_after": "{int(RETENTION.total_seconds())} seconds"}}'
        await asyncio.gather(*(run.execute("CALL expire_readings(0, $1::jsonb)", config) for run in runs))
    finally:
        for run in runs:
            await run.close()
    assert await meters_with_readings(sql) == {"both": 4}
    await catalog_matches_readings(sql)
