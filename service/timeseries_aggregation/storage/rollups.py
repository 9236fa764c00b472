"""Rollups in SQL: the hourly and daily rollups of the hours a transaction touched are brought
up to date before it commits (grown by what its new readings add, or made again from the
readings), while it holds those series' catalog rows; and whole series are rebuilt, or checked
against their readings, on demand.

Holding the catalog row is what keeps rollups exact under concurrent writers: every transaction
that changes a series' readings (ingest, DeleteReadings, retention, a rebuild) updates or locks
that row and keeps it until it commits, so their rollup work runs one after the other, and each
recomputation reads the readings in a statement that starts after the previous writer committed.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from timeseries_aggregation.domain.batch import unix_micros
from timeseries_aggregation.domain.rollups import HOUR_MICROS, HourFigures, StreamHours, day_runs
from timeseries_aggregation.storage.aggregate_sql import summed
from timeseries_aggregation.storage.database import Database

Runs = dict[str, list[tuple[int, int]]]

# Rollups are made of readings within the bound only: an hour holding a reading stored beyond
# it (before the bound was checked) could overflow a sum, and its total is not used anyway
# (domain/aggregation.credible_total answers by its minimum and maximum).
_GUARDED_SUM = summed(True, "r.quantity_kwh", "r.quantity_kwh", "r.quantity_kwh")

# Runs of hours (or days) per series, as parallel arrays of the series and the first and
# past-the-end hour (or day) numbers since the Unix epoch.
_RUNS = """
    SELECT series_id,
           to_timestamp(first_unit * {seconds}) AS range_start,
           to_timestamp(end_unit * {seconds}) AS range_end
    FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS run(series_id, first_unit, end_unit)
"""
_DELETE_RUNS = """
    DELETE FROM {table} AS stored
    USING ({runs}) AS run
    WHERE stored.series_id = run.series_id
      AND stored.bucket_start >= run.range_start AND stored.bucket_start < run.range_end
"""
_HOURS_FROM_READINGS = f"""
    INSERT INTO hourly_rollups (series_id, bucket_start, total, minimum, maximum, reading_count)
    SELECT run.series_id, date_bin(INTERVAL '1 hour', r.time, TIMESTAMPTZ 'epoch'),
           {_GUARDED_SUM}, min(r.quantity_kwh), max(r.quantity_kwh), count(*)
    FROM ({_RUNS.format(seconds=3600)}) AS run
    JOIN readings AS r
      ON r.series_id = run.series_id AND r.time >= run.range_start AND r.time < run.range_end
    GROUP BY 1, 2
"""
_DAYS_FROM_HOURS = f"""
    INSERT INTO daily_rollups (series_id, bucket_start, total, minimum, maximum, reading_count)
    SELECT run.series_id, date_bin(INTERVAL '1 day', h.bucket_start, TIMESTAMPTZ 'epoch'),
           sum(h.total), min(h.minimum), max(h.maximum), sum(h.reading_count)
    FROM ({_RUNS.format(seconds=86400)}) AS run
    JOIN hourly_rollups AS h
      ON h.series_id = run.series_id AND h.bucket_start >= run.range_start AND h.bucket_start < run.range_end
    GROUP BY 1, 2
"""
_DELETE_HOURS = _DELETE_RUNS.format(table="hourly_rollups", runs=_RUNS.format(seconds=3600))
_DELETE_DAYS = _DELETE_RUNS.format(table="daily_rollups", runs=_RUNS.format(seconds=86400))

# Not while older builds may write (writer_contract.py, `schema allow-older-writers`): they would
# leave the rollups behind the readings.
_SWITCH_ON = """
    UPDATE series SET rolled_up = true
    WHERE series_id = ANY($1::text[]) AND NOT rolled_up AND timeseries_required_writer_contract() > 0
"""


def _arrays(runs: Runs) -> tuple[list[str], list[int], list[int]]:
    series_ids, firsts, ends = [], [], []
    for series_id in sorted(runs):
        for first, end in runs[series_id]:
            series_ids.append(series_id)
            firsts.append(first)
            ends.append(end)
    return series_ids, firsts, ends


async def recompute_rollups(connection: asyncpg.Connection, hour_runs: Runs) -> None:
    """Make the hourly rollups of `hour_runs` again from the readings, and the daily rollups of
    the days that hold them from the hourly ones; inside the caller's transaction, which holds
    the series' catalog rows."""
    await _recompute_hours(connection, hour_runs)
    await _recompute_days(connection, hour_runs)


async def _recompute_hours(connection: asyncpg.Connection, hour_runs: Runs) -> None:
    if hour_runs:
        hours = _arrays(hour_runs)
        await connection.execute(_DELETE_HOURS, *hours)
        await connection.execute(_HOURS_FROM_READINGS, *hours)


async def _recompute_days(connection: asyncpg.Connection, hour_runs: Runs) -> None:
    if hour_runs:
        days = _arrays({series_id: day_runs(runs) for series_id, runs in hour_runs.items()})
        await connection.execute(_DELETE_DAYS, *days)
        await connection.execute(_DAYS_FROM_HOURS, *days)


# What a stream's new readings add to hours of a series whose rollups were exact before it.
_ADD_TO_HOURS = """
    INSERT INTO hourly_rollups AS stored (series_id, bucket_start, total, minimum, maximum, reading_count)
    SELECT series_id, to_timestamp(hour * 3600), total, minimum, maximum, reading_count
    FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::float8[], $6::bigint[])
         AS added(series_id, hour, total, minimum, maximum, reading_count)
    ORDER BY 1, 2
    ON CONFLICT (series_id, bucket_start) DO UPDATE SET
        total = stored.total + EXCLUDED.total,
        minimum = least(stored.minimum, EXCLUDED.minimum),
        maximum = greatest(stored.maximum, EXCLUDED.maximum),
        reading_count = stored.reading_count + EXCLUDED.reading_count
"""


async def _add_to_hours(connection: asyncpg.Connection, figures: HourFigures) -> None:
    if figures.series_ids:
        await connection.execute(
            _ADD_TO_HOURS,
            figures.series_ids,
            figures.hours,
            figures.totals,
            figures.minimums,
            figures.maximums,
            figures.counts,
        )


@dataclass(frozen=True, slots=True)
class CatalogFigures:
    """A series' catalog row as a stream's catalog update left it (the stream's readings
    included), its rollup flag as it was before."""

    rolled_up: bool
    reading_count: int
    first_reading_time: datetime
    last_reading_time: datetime


def _hour_number(instant: datetime) -> int:
    return unix_micros(instant) // HOUR_MICROS


async def maintain_stream_rollups(
    connection: asyncpg.Connection,
    hours: StreamHours,
    catalog: dict[str, CatalogFigures],
    added: dict[str, int],
) -> None:
    """Bring the rollups of a stream's series up to date with its readings, just before it
    commits, after its catalog update has locked their rows.

    A rolled-up series' hours grow by what the stream's copied readings add, where all of them
    were gathered, and are made again from the readings where it rewrote them (or where they
    were not gathered). A series the stream gave more than one reading in an hour becomes
    rolled up: from the stream's own figures if all its readings are the stream's, else from
    everything it holds.
    """
    recomputed: Runs = {}
    additive: set[str] = set()
    switching_on = []
    for series_id, runs in hours.touched.runs.items():
        figures = catalog[series_id]
        if not figures.rolled_up:
            if series_id not in hours.touched.dense:
                continue
            switching_on.append(series_id)
            if figures.reading_count != added.get(series_id, 0):
                first = _hour_number(figures.first_reading_time)
                recomputed[series_id] = [(first, _hour_number(figures.last_reading_time) + 1)]
                continue
        if series_id in hours.additions.added:
            additive.add(series_id)
            if series_id in hours.rewritten.runs:
                recomputed[series_id] = hours.rewritten.runs[series_id]
        else:
            recomputed[series_id] = runs
    if switching_on:
        await connection.execute(_SWITCH_ON, sorted(switching_on))
    await _add_to_hours(connection, hours.additions.figures(additive, hours.rewritten.runs))
    await _recompute_hours(connection, recomputed)
    # Every day holding an hour that changed: a series' added hours run wider than the hours
    # it rewrote (those of its copied chunks too), so its days come from every hour it touched.
    await _recompute_days(
        connection, {**recomputed, **{series_id: hours.touched.runs[series_id] for series_id in additive}}
    )


# A series' catalog row, locked until the transaction ends: no other writer changes its
# readings or rollups meanwhile, and the figures below count everything committed before.
_LOCK_SERIES = """
    SELECT rolled_up, first_reading_time, last_reading_time FROM series WHERE series_id = $1 FOR UPDATE
"""


async def lock_series(connection: asyncpg.Connection, series_id: str) -> asyncpg.Record | None:
    """The series' rollup flag and first and last reading time, its catalog row locked; None
    when the catalog lacks it."""
    row: asyncpg.Record | None = await connection.fetchrow(_LOCK_SERIES, series_id)
    return row


def hour_span(
    first: datetime, last: datetime, start: datetime | None, end: datetime | None
) -> tuple[int, int]:
    """The hours (numbers since the epoch) of a series' readings from `first` to `last` that
    overlap [start, end): every hour holding a reading of the range, whole."""
    low = unix_micros(first if start is None else max(first, start))
    high = unix_micros(last) + 1 if end is None else min(unix_micros(last) + 1, unix_micros(end))
    return low // HOUR_MICROS, -(-high // HOUR_MICROS)


async def rebuild_series_rollups(
    database: Database, series_id: str, start: datetime | None = None, end: datetime | None = None
) -> bool:
    """Make the series' rollups again from its readings (all of them, or the hours of
    [start, end)); a whole series rebuilt becomes rolled up. False when the catalog lacks it."""
    async with database.write_connection() as connection, connection.transaction():
        row = await lock_series(connection, series_id)
        if row is None:
            return False
        if start is None and end is None:
            first_time, last_time = row["first_reading_time"], row["last_reading_time"]
            await rebuild_whole_series(connection, series_id, first_time, last_time)
        elif row["first_reading_time"] is not None and row["rolled_up"]:
            first, end_hour = hour_span(row["first_reading_time"], row["last_reading_time"], start, end)
            if first < end_hour:
                await recompute_rollups(connection, {series_id: [(first, end_hour)]})
        return True


async def rebuild_whole_series(
    connection: asyncpg.Connection, series_id: str, first: datetime | None, last: datetime | None
) -> None:
    """Make every rollup of the series again from its readings, whose first and last reading
    time are given, and mark it rolled up; inside the caller's transaction, which holds the
    series' catalog row."""
    await connection.execute("DELETE FROM hourly_rollups WHERE series_id = $1", series_id)
    await connection.execute("DELETE FROM daily_rollups WHERE series_id = $1", series_id)
    await connection.execute(_SWITCH_ON, [series_id])
    if first is not None and last is not None:
        await connection.execute(_SERIES_HOURS_FROM_READINGS, series_id)
        await connection.execute(_SERIES_DAYS_FROM_HOURS, series_id)


# A whole series' rollups, where it has none: one series each, through the primary keys (the
# runs of recompute_rollups cost a join per series that a rebuild of thousands repeats).
_SERIES_HOURS_FROM_READINGS = f"""
    INSERT INTO hourly_rollups (series_id, bucket_start, total, minimum, maximum, reading_count)
    SELECT $1, date_bin(INTERVAL '1 hour', r.time, TIMESTAMPTZ 'epoch'),
           {_GUARDED_SUM}, min(r.quantity_kwh), max(r.quantity_kwh), count(*)
    FROM readings AS r WHERE r.series_id = $1
    GROUP BY 2
"""
_SERIES_DAYS_FROM_HOURS = """
    INSERT INTO daily_rollups (series_id, bucket_start, total, minimum, maximum, reading_count)
    SELECT $1, date_bin(INTERVAL '1 day', bucket_start, TIMESTAMPTZ 'epoch'),
           sum(total), min(minimum), max(maximum), sum(reading_count)
    FROM hourly_rollups WHERE series_id = $1
    GROUP BY 2
"""


@dataclass(frozen=True, slots=True)
class RollupMismatch:
    """A rollup row that differs from what the readings (or, for a day, its hours) give."""

    series_id: str
    rollup: str  # "hourly" or "daily"
    bucket_start: datetime
    stored: tuple[float, float, float, int] | None
    expected: tuple[float, float, float, int] | None


# Stored rollups against what the readings give, for one series and a range of whole hours
# (days): $1 series, $2/$3 the range. Sums agree to rounding (they add in another order).
_CHECK = """
    WITH expected AS (
        SELECT date_bin(INTERVAL '1 {unit}', time, TIMESTAMPTZ 'epoch') AS bucket_start,
               {guarded_sum} AS total, min(quantity_kwh) AS minimum,
               max(quantity_kwh) AS maximum, count(*) AS reading_count
        FROM readings WHERE series_id = $1 AND time >= $2 AND time < $3
        GROUP BY 1
    ), stored AS (
        SELECT bucket_start, total, minimum, maximum, reading_count
        FROM {table} WHERE series_id = $1 AND bucket_start >= $2 AND bucket_start < $3
    )
    SELECT coalesce(s.bucket_start, e.bucket_start) AS bucket_start,
           s.total AS stored_total, s.minimum AS stored_minimum, s.maximum AS stored_maximum,
           s.reading_count AS stored_count,
           e.total, e.minimum, e.maximum, e.reading_count
    FROM stored AS s FULL JOIN expected AS e ON s.bucket_start = e.bucket_start
    WHERE s.bucket_start IS NULL OR e.bucket_start IS NULL
       OR s.minimum <> e.minimum OR s.maximum <> e.maximum OR s.reading_count <> e.reading_count
       OR abs(s.total - e.total) > 1e-9 * greatest(abs(e.total), 1)
    ORDER BY 1
"""
_CHECK_SUM = summed(True, "quantity_kwh", "quantity_kwh", "quantity_kwh")
_CHECK_HOURS = _CHECK.format(unit="hour", table="hourly_rollups", guarded_sum=_CHECK_SUM)
_CHECK_DAYS = _CHECK.format(unit="day", table="daily_rollups", guarded_sum=_CHECK_SUM)


async def check_series_rollups(
    database: Database, series_id: str, start: datetime | None = None, end: datetime | None = None
) -> list[RollupMismatch] | None:
    """The rollup rows of the series (in the whole hours and days of [start, end), or all of
    them) that differ from its readings; None when the series is not rolled up."""
    async with database.query_connection() as connection, connection.transaction():
        row = await lock_series(connection, series_id)
        if row is None or not row["rolled_up"]:
            return None
        if start is None and end is None:
            # All of it, not the span the catalog gives, which may miss readings it never counted.
            return await whole_series_mismatches(connection, series_id)
        mismatches: list[RollupMismatch] = []
        if row["first_reading_time"] is None:
            return mismatches
        first, end_hour = hour_span(row["first_reading_time"], row["last_reading_time"], start, end)
        for rollup, sql, hours in (("hourly", _CHECK_HOURS, 1), ("daily", _CHECK_DAYS, 24)):
            # Every hour (day) holding a reading of the range, whole.
            low, high = first // hours * hours * 3600, -(-end_hour // hours) * hours * 3600
            differing = await connection.fetch(sql, series_id, _utc(low), _utc(high))
            mismatches.extend(_mismatch(series_id, rollup, found) for found in differing)
        return mismatches


def _utc(unix_seconds: int) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=UTC)


def _mismatch(series_id: str, rollup: str, row: asyncpg.Record) -> RollupMismatch:
    stored = None if row["stored_count"] is None else (row[1], row[2], row[3], row[4])
    expected = None if row["reading_count"] is None else (row[5], row[6], row[7], row[8])
    return RollupMismatch(series_id, rollup, row["bucket_start"], stored, expected)


# Bounds wider than any reading's time: a whole series' rollups against all its readings.
_ALL_TIME = (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))


async def whole_series_mismatches(connection: asyncpg.Connection, series_id: str) -> list[RollupMismatch]:
    """Every rollup row of the series that differs from what all its readings give, rows
    without readings included; in the caller's transaction."""
    mismatches: list[RollupMismatch] = []
    for rollup, sql in (("hourly", _CHECK_HOURS), ("daily", _CHECK_DAYS)):
        differing = await connection.fetch(sql, series_id, *_ALL_TIME)
        mismatches.extend(_mismatch(series_id, rollup, found) for found in differing)
    return mismatches


# The rule that rolls a series up (domain/rollups.TouchedHours): two readings in one UTC hour.
# Walks the series' readings in time order and stops at the first such pair, so a dense series
# answers at once and an hourly one costs one pass over its index.
_HAS_DENSE_HOUR = """
    SELECT EXISTS (
        SELECT 1
        FROM (
            SELECT hour, lag(hour) OVER (ORDER BY time) AS previous
            FROM (
                SELECT time, date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ 'epoch') AS hour
                FROM readings WHERE series_id = $1
            ) AS hours
        ) AS ordered
        WHERE hour = previous
    )
"""


async def has_dense_hour(connection: asyncpg.Connection, series_id: str) -> bool:
    """Whether an hour holds more than one of the series' readings: it should be rolled up."""
    dense: bool = await connection.fetchval(_HAS_DENSE_HOUR, series_id)
    return dense


async def due_for_rollups(database: Database, series_id: str) -> bool:
    """Whether the series is in the catalog, not rolled up, and should be (written by a server
    that kept no rollups, or stored before they existed)."""
    async with database.query_connection() as connection:
        rolled = await connection.fetchval("SELECT rolled_up FROM series WHERE series_id = $1", series_id)
        return rolled is False and await has_dense_hour(connection, series_id)


async def series_with_rollups_due(database: Database) -> list[str]:
    """Every series that is rolled up or should be, in series_id order."""
    async with database.query_connection() as connection:
        rows = await connection.fetch("SELECT series_id, rolled_up FROM series ORDER BY 1")
        return [
            row["series_id"]
            for row in rows
            if row["rolled_up"] or await has_dense_hour(connection, row["series_id"])
        ]
