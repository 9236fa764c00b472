"""DeleteReadings in SQL: the selected series' readings in a range, and their catalog figures,
in one transaction."""

from dataclasses import dataclass

import asyncpg

from timeseries_aggregation.domain.deletion import ReadingsDeletion
from timeseries_aggregation.domain.paging import PageRequest
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.readings import NO_DECOMPRESSION_LIMIT
from timeseries_aggregation.storage.series_catalog import (
    account_deletions,
    check_selected_series_exist,
    delete_series_ranges,
    list_series_statement,
)
from timeseries_aggregation.storage.series_locks import lock_for_deletion

# Series picked per catalog read: the selector is resolved a page at a time, in series_id order,
# which is also the order their catalog rows are locked in.
_SERIES_PER_READ = 1_000


@dataclass(frozen=True, slots=True)
class DeletionOutcome:
    series_count: int
    deleted_count: int


async def delete_readings(database: Database, deletion: ReadingsDeletion) -> DeletionOutcome:
    """Delete what the deletion names, all or nothing; a series id of the selector that the
    catalog lacks is SeriesNotFoundError, and nothing is deleted.

    A statement per series keeps each one on the worker holding the series on Citus (and
    finds its readings through the primary key everywhere); deletions are rare and their
    selectors small, so the round trips are cheap next to the work.
    """
    # The streams writing these series end first (storage/series_locks.py), and the lock is the
    # transaction's first statement: a deletion waiting for it holds nothing on Citus workers
    # (whose deadlock detection counts every transaction that has not written yet as one).
    candidates = deletion.selector.series_ids
    if candidates is None:
        async with database.query_connection() as connection:
            candidates = tuple(await _selected_series(connection, deletion.selector))
    async with database.write_connection() as connection, connection.transaction():
        await lock_for_deletion(connection, candidates)
        if database.capabilities.decompresses_on_write:
            # A deletion in a compressed chunk decompresses what it deletes from; do not cap it.
            await connection.execute(NO_DECOMPRESSION_LIMIT)
        await check_selected_series_exist(connection, deletion.selector)
        selected = await _selected_series(connection, deletion.selector)
        # Series whose labels came to match after the first look (rare): their locks now.
        await lock_for_deletion(connection, sorted(set(selected) - set(candidates)))
        # Readings first, catalog rows last, in the order streams lock them (series_catalog.py).
        deleted = await delete_series_ranges(
            connection, selected, deletion.start_time, deletion.end_time, database.capabilities.distributed
        )
        await account_deletions(connection, deleted, deletion.start_time, deletion.end_time)
        return DeletionOutcome(len(selected), sum(deleted.values()))


async def _selected_series(connection: asyncpg.Connection, selector: SeriesSelector) -> list[str]:
    """Every series id the selector picks, in series_id order."""
    selected: list[str] = []
    after: str | None = None
    while True:
        sql, arguments = list_series_statement(selector, PageRequest(_SERIES_PER_READ, after))
        series_ids = [row["series_id"] for row in await connection.fetch(sql, *arguments)]
        selected += series_ids[:_SERIES_PER_READ]
        if len(series_ids) <= _SERIES_PER_READ:
            return selected
        after = series_ids[_SERIES_PER_READ - 1]
