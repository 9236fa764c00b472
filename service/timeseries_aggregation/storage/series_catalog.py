"""The series catalog in SQL: created and kept exact by the ingest transaction, updated by
UpdateSeries, paged through by ListSeries without reading any reading; checked against the
readings and repaired, batch by batch, on the operator's demand."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import numpy as np

from timeseries_aggregation.domain.batch import ReadingBatch, unix_micros_to_datetime
from timeseries_aggregation.domain.paging import Page, PageRequest
from timeseries_aggregation.domain.series import Series, SeriesSelector, SeriesUpdate
from timeseries_aggregation.errors import SeriesNotFoundError
from timeseries_aggregation.storage.database import Database, row_count
from timeseries_aggregation.storage.rollups import (
    CatalogFigures,
    RollupMismatch,
    has_dense_hour,
    hour_span,
    lock_series,
    rebuild_whole_series,
    recompute_rollups,
    whole_series_mismatches,
)
from timeseries_aggregation.storage.writer_contract import DECLARE_ON_SHARDS

_COLUMNS = "series_id, labels, reading_interval_seconds, first_reading_time, last_reading_time, reading_count"

# One row per series of a stream, in series_id order so that concurrent streams lock catalog
# rows in one order. least/greatest skip NULLs: a series created without readings gets its
# first figures here. The rows returned are the latest versions (a concurrent stream's update
# waited for), with this stream's figures added and its rollup flag not yet changed.
_RECORD_READINGS = """
    INSERT INTO series AS stored (series_id, first_reading_time, last_reading_time, reading_count)
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bigint[])
    ORDER BY 1
    ON CONFLICT (series_id) DO UPDATE SET
        first_reading_time = least(stored.first_reading_time, EXCLUDED.first_reading_time),
        last_reading_time = greatest(stored.last_reading_time, EXCLUDED.last_reading_time),
        reading_count = stored.reading_count + EXCLUDED.reading_count
    RETURNING series_id, rolled_up, reading_count, first_reading_time, last_reading_time
"""

# $4 and $5 say whether labels and the interval are set; a field not set keeps its value, and
# a new series gets no labels and no interval for it.
_UPDATE_SERIES = f"""
    INSERT INTO series AS stored (series_id, labels, reading_interval_seconds)
    VALUES ($1, coalesce($2::jsonb, '{{}}'::jsonb), $3)
    ON CONFLICT (series_id) DO UPDATE SET
        labels = CASE WHEN $4 THEN EXCLUDED.labels ELSE stored.labels END,
        reading_interval_seconds = CASE WHEN $5 THEN EXCLUDED.reading_interval_seconds
                                        ELSE stored.reading_interval_seconds END
    RETURNING {_COLUMNS}
"""


def _list_series_sql(by_id: bool) -> str:
    """A page of the catalog in code point order: $1 the label pairs every series must carry,
    $2 the last series_id already returned ('' for none), $3 the page size plus one, and
    when `by_id`, $4 the series ids to pick from."""
    pick = "AND series_id = ANY($4::text[])" if by_id else ""
    return f"""
        SELECT {_COLUMNS}
        FROM series
        WHERE labels @> $1::jsonb
          AND (series_id COLLATE "C") > ($2::text COLLATE "C")
          {pick}
        ORDER BY series_id COLLATE "C"
        LIMIT $3
    """


_LIST_SERIES = _list_series_sql(by_id=False)
_LIST_SERIES_BY_ID = _list_series_sql(by_id=True)

# The ids of $1 that the catalog lacks: one primary key probe each.
_MISSING_SERIES = """
    SELECT array(
        SELECT unnest($1::text[])
        EXCEPT
        SELECT series_id FROM series WHERE series_id = ANY($1::text[])
    )
"""


async def check_series_exist(connection: asyncpg.Connection, series_ids: Sequence[str], field: str) -> None:
    """Raise SeriesNotFoundError naming those of the ids (given in `field`) that the catalog
    lacks, in code point order."""
    missing: list[str] = await connection.fetchval(_MISSING_SERIES, list(series_ids))
    if missing:
        raise SeriesNotFoundError(field, sorted(missing))


async def check_selected_series_exist(connection: asyncpg.Connection, selector: SeriesSelector) -> None:
    """Raise SeriesNotFoundError when the selector names series by id that the catalog lacks;
    labels that match nothing are no error."""
    if selector.series_ids is not None:
        await check_series_exist(connection, selector.series_ids, "selector.series_ids")


@dataclass(slots=True)
class SeriesTally:
    """What one stream adds to each series' catalog figures, gathered chunk by chunk and written
    once before the stream commits: the earliest and latest reading time it wrote (in
    microseconds) and how many of its readings were new keys."""

    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)

    def add(self, series_id: str, first_micros: int, last_micros: int, added: int) -> None:
        self.first[series_id] = min(first_micros, self.first.get(series_id, first_micros))
        self.last[series_id] = max(last_micros, self.last.get(series_id, last_micros))
        self.added[series_id] = self.added.get(series_id, 0) + added

    def add_new_readings(self, chunk: ReadingBatch) -> None:
        """Count a chunk whose readings were all new keys (a direct COPY that succeeded).

        The chunk is sorted by key, so each series' readings are one run, in time order.
        """
        index = chunk.series_index
        if len(index) == 0:
            return
        starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
        ends = np.append(starts[1:], len(index))
        times = chunk.time_unix_micros
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            series_id = chunk.series_ids[int(index[start])]
            self.add(series_id, int(times[start]), int(times[end - 1]), end - start)

    async def write(self, connection: asyncpg.Connection) -> dict[str, CatalogFigures]:
        """Create the stream's series where missing and add its figures to theirs; returns
        their rows, which stay locked until the stream's transaction ends."""
        if not self.added:
            return {}
        series_ids = sorted(self.added)
        rows = await connection.fetch(
            _RECORD_READINGS,
            series_ids,
            [unix_micros_to_datetime(self.first[series_id]) for series_id in series_ids],
            [unix_micros_to_datetime(self.last[series_id]) for series_id in series_ids],
            [self.added[series_id] for series_id in series_ids],
        )
        return {row["series_id"]: CatalogFigures(*row[1:]) for row in rows}


async def update_series(database: Database, update: SeriesUpdate) -> Series:
    """Set what the update names, creating the series when the catalog lacks it."""
    labels = json.dumps(update.labels) if update.labels is not None else None
    sets_interval = update.reading_interval_seconds is not None or update.clear_reading_interval
    async with database.write_connection() as connection:
        row = await connection.fetchrow(
            _UPDATE_SERIES,
            update.series_id,
            labels,
            update.reading_interval_seconds,
            update.labels is not None,
            sets_interval,
        )
    assert row is not None
    return _series(row)


# Deletions take their locks in the order streams do, readings first and catalog rows after:
# a stream holds the rows it wrote until it commits and updates its series' catalog rows last,
# so a deletion that locked a catalog row before deleting readings the stream held would wait
# on the stream while the stream waited on it. One series per statement, routed to one worker
# on Citus (where both tables are co-located).
_DELETE_RANGE = "DELETE FROM readings WHERE series_id = $1 AND time >= $2 AND time < $3"
# After the series' catalog row is locked, the figures of what is left; a new statement, so it
# sees every stream that committed before the lock (their readings and their reading counts).
_ACCOUNT_DELETION = """
    UPDATE series SET
        reading_count = reading_count - $2,
        first_reading_time = (SELECT min(time) FROM readings WHERE series_id = $1),
        last_reading_time = (SELECT max(time) FROM readings WHERE series_id = $1)
    WHERE series_id = $1
"""


async def delete_series_ranges(
    connection: asyncpg.Connection,
    series_ids: Sequence[str],
    start_time: datetime,
    end_time: datetime,
    distributed: bool,
) -> dict[str, int]:
    """Delete the readings of each series in [start_time, end_time), inside the caller's
    transaction; returns how many went, per series that lost any. Then account_deletions.

    distributed: readings is a Citus distributed table (EngineCapabilities.distributed)."""
    deleted: dict[str, int] = {}
    if distributed:
        # The session declares this build's contract already; Citus checks deletes on the
        # shards, in its own sessions, which learn it from SET LOCAL (writer_contract.py).
        await connection.execute(DECLARE_ON_SHARDS)
    for series_id in series_ids:
        count = row_count(await connection.execute(_DELETE_RANGE, series_id, start_time, end_time))
        if count:
            deleted[series_id] = count
    return deleted


async def account_deletions(
    connection: asyncpg.Connection, deleted: dict[str, int], start_time: datetime, end_time: datetime
) -> None:
    """Bring the catalog figures and rollups of the series delete_series_ranges deleted from up
    to date, locking their catalog rows in series_id order (the order streams lock them in)."""
    for series_id in sorted(deleted):
        catalog = await lock_series(connection, series_id)
        if catalog is None:
            continue
        await connection.execute(_ACCOUNT_DELETION, series_id, deleted[series_id])
        if catalog["rolled_up"]:
            span = hour_span(
                catalog["first_reading_time"], catalog["last_reading_time"], start_time, end_time
            )
            await recompute_rollups(connection, {series_id: [span]})


def list_series_statement(selector: SeriesSelector, page: PageRequest[str]) -> tuple[str, list[object]]:
    """The statement that reads one page of the series the selector picks, with its arguments."""
    arguments: list[object] = [
        json.dumps(selector.labels),
        page.after if page.after is not None else "",
        page.page_size + 1,  # one more tells whether another page follows
    ]
    if selector.series_ids is None:
        return _LIST_SERIES, arguments
    return _LIST_SERIES_BY_ID, [*arguments, list(selector.series_ids)]


async def list_series(database: Database, selector: SeriesSelector, page: PageRequest[str]) -> Page[Series]:
    """One page of the series the selector picks, in code point order of series_id; a series id
    of the selector that the catalog lacks is SeriesNotFoundError."""
    sql, arguments = list_series_statement(selector, page)
    async with database.query_connection() as connection:
        await check_selected_series_exist(connection, selector)
        rows = await connection.fetch(sql, *arguments)
    return Page([_series(row) for row in rows[: page.page_size]], has_more=len(rows) > page.page_size)


def _series(row: asyncpg.Record) -> Series:
    return Series(
        series_id=row["series_id"],
        labels=json.loads(row["labels"]),
        reading_interval_seconds=row["reading_interval_seconds"],
        first_reading_time=row["first_reading_time"],
        last_reading_time=row["last_reading_time"],
        reading_count=row["reading_count"],
    )


# Checking and repairing what the catalog derives from the readings.
#
# A server from before the catalog (or before rollups) that kept writing after the migration
# left series without a catalog row, figures short of their readings, and dense series without
# rollups. Each series is checked (or repaired) on its own, in batches of series per
# transaction: a live database is never held in one long transaction, and a series' catalog
# row is locked only while its own figures are made.


@dataclass(frozen=True, slots=True)
class ReadingFigures:
    """What the catalog keeps of a series' readings. A series without readings has a count of
    0 and no first or last reading time (what deletion and retention leave)."""

    reading_count: int
    first_reading_time: datetime | None
    last_reading_time: datetime | None


@dataclass(frozen=True, slots=True)
class SeriesDrift:
    """How one series' catalog row and rollups differ from what its readings give."""

    series_id: str
    stored: ReadingFigures | None  # None: the catalog lacks the series
    derived: ReadingFigures
    rollups_due: bool  # not rolled up, though an hour holds two of its readings
    rollup_mismatches: list[RollupMismatch]

    @property
    def figures_differ(self) -> bool:
        """A series in neither the catalog nor the readings is no difference: it does not exist."""
        if self.stored is None:
            return self.derived.reading_count > 0
        return self.stored != self.derived


# The next series after $1 (in the database's order of series_id) that has readings: an index
# probe on every engine, as Citus runs no recursive query over distributed tables. From the
# start, the comparison is >= '': a blank series id (stored before they were refused) counts.
_NEXT_IN_READINGS = "SELECT min(series_id) FROM readings WHERE series_id {after} $1"
# The first $2 series after $1 of the catalog and of $3 (the next ones in the readings), merged
# in the database's order, which is the order readings and streams lock them in.
_NEXT_SERIES = """
    SELECT series_id FROM (
        SELECT unnest($3::text[]) AS series_id
        UNION
        (SELECT series_id FROM series WHERE series_id {after} $1 ORDER BY series_id LIMIT $2)
    ) AS ids
    ORDER BY series_id
    LIMIT $2
"""
_FIGURES_OF_READINGS = "SELECT count(*), min(time), max(time) FROM readings WHERE series_id = $1"
_STORED_FIGURES = """
    SELECT reading_count, first_reading_time, last_reading_time, rolled_up FROM series WHERE series_id = $1
"""
# Locked as ingest locks it (its catalog update, which it holds until it commits): a stream
# that wrote readings of the series and has not committed updates the row after this repair
# commits, adding what it wrote to the figures made here from what was committed.
_LOCK_FIGURES = _STORED_FIGURES + " FOR UPDATE"
_HAS_READINGS = "SELECT EXISTS (SELECT 1 FROM readings WHERE series_id = $1)"
_ADD_SERIES = "INSERT INTO series (series_id) VALUES ($1) ON CONFLICT (series_id) DO NOTHING"
_SET_FIGURES = """
    UPDATE series SET reading_count = $2, first_reading_time = $3, last_reading_time = $4
    WHERE series_id = $1
"""


async def next_series_ids(database: Database, after: str | None, limit: int) -> list[str]:
    """Up to `limit` series after `after` (from the first when None) that are in the catalog or
    have readings, in the database's order of series_id."""
    first, comparison = ("", ">=") if after is None else (after, ">")
    async with database.query_connection() as connection:
        in_readings: list[str] = []
        cursor, probe = first, _NEXT_IN_READINGS.format(after=comparison)
        while len(in_readings) < limit:
            found = await connection.fetchval(probe, cursor)
            if found is None:
                break
            in_readings.append(found)
            cursor, probe = found, _NEXT_IN_READINGS.format(after=">")
        rows = await connection.fetch(_NEXT_SERIES.format(after=comparison), first, limit, in_readings)
    return [row["series_id"] for row in rows]


async def in_lock_order(database: Database, series_ids: Sequence[str]) -> list[str]:
    """The distinct series ids in the database's order of series_id, the order streams lock
    catalog rows in (a repair taking them in another could deadlock with a stream)."""
    async with database.query_connection() as connection:
        ordered: list[str] = await connection.fetchval(
            "SELECT array(SELECT DISTINCT series_id FROM unnest($1::text[]) AS series_id ORDER BY 1)",
            list(series_ids),
        )
    return ordered


async def _figures_of_readings(connection: asyncpg.Connection, series_id: str) -> ReadingFigures:
    row = await connection.fetchrow(_FIGURES_OF_READINGS, series_id)
    assert row is not None
    return ReadingFigures(*row)


async def _drift(
    connection: asyncpg.Connection, series_id: str, stored: asyncpg.Record | None
) -> SeriesDrift:
    """The series' drift, read in the caller's transaction after `stored` (its catalog row)."""
    derived = await _figures_of_readings(connection, series_id)
    rolled_up = stored is not None and stored["rolled_up"]
    due = not rolled_up and derived.reading_count > 1 and await has_dense_hour(connection, series_id)
    return SeriesDrift(
        series_id=series_id,
        stored=None if stored is None else ReadingFigures(*stored[:3]),
        derived=derived,
        rollups_due=due,
        rollup_mismatches=await whole_series_mismatches(connection, series_id) if rolled_up else [],
    )


async def check_catalog(database: Database, series_ids: Sequence[str]) -> list[SeriesDrift]:
    """The series (of those given) whose catalog figures or rollups differ from their readings.

    One snapshot for the batch (repeatable read, read only): what the catalog and rollups say
    is compared with the readings as of the same committed streams, with no lock taken, so
    ingest runs on meanwhile.
    """
    drifted = []
    async with (
        database.query_connection() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        for series_id in series_ids:
            drift = await _drift(connection, series_id, await connection.fetchrow(_STORED_FIGURES, series_id))
            if drift.figures_differ or drift.rollups_due or drift.rollup_mismatches:
                drifted.append(drift)
    return drifted


async def repair_catalog(database: Database, series_ids: Sequence[str]) -> list[SeriesDrift]:
    """Make the catalog figures and rollups of the series given (in the database's order of
    series_id, the order streams lock them in) those of their readings; returns what differed.

    One transaction for the batch. Each series' catalog row is created where missing (with no
    labels) and locked before its readings are read, in a statement of its own, so its figures
    count every stream committed before the lock, and streams not yet committed add theirs
    after. A series that should be rolled up, or whose rollups differ, is rolled up again whole.
    """
    repaired = []
    async with database.write_connection() as connection, connection.transaction():
        for series_id in series_ids:
            stored = await connection.fetchrow(_LOCK_FIGURES, series_id)
            if stored is None:
                if not await connection.fetchval(_HAS_READINGS, series_id):
                    continue  # nothing to add: a stream that writes it creates its row
                await connection.execute(_ADD_SERIES, series_id)
                stored = await connection.fetchrow(_LOCK_FIGURES, series_id)
                assert stored is not None
                drift = await _drift(connection, series_id, None)
            else:
                drift = await _drift(connection, series_id, stored)
            if not (drift.figures_differ or drift.rollups_due or drift.rollup_mismatches):
                continue
            derived = drift.derived
            if drift.figures_differ:
                await connection.execute(
                    _SET_FIGURES,
                    series_id,
                    derived.reading_count,
                    derived.first_reading_time,
                    derived.last_reading_time,
                )
            if drift.rollups_due or drift.rollup_mismatches:
                await rebuild_whole_series(
                    connection, series_id, derived.first_reading_time, derived.last_reading_time
                )
            repaired.append(drift)
    return repaired
