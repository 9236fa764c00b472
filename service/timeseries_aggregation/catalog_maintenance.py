"""The operator's catalog commands, run against the database directly: check that the series
catalog and the rollups are what the readings give, and repair them where they are not (after
an upgrade from a version without them, or a rolling deploy in which an old server wrote
readings behind the catalog's back)."""

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TextIO

from timeseries_aggregation.difference_report import DEFAULT_SHOWN, DifferenceReport
from timeseries_aggregation.errors import ConcurrencyConflictError
from timeseries_aggregation.rollup_maintenance import SETTINGS, mismatch_line, rollups_due_line
from timeseries_aggregation.storage.database import Database, open_database
from timeseries_aggregation.storage.series_catalog import (
    ReadingFigures,
    SeriesDrift,
    check_catalog,
    in_lock_order,
    next_series_ids,
    repair_catalog,
)

# Series per transaction: each series' catalog row stays locked until its batch commits, so a
# batch is small enough that a stream of those series waits a moment, not minutes.
DEFAULT_BATCH_SIZE = 100
# A repair batch that meets a deletion locking the same rows in another order is ended by
# the database (nothing of it kept) and tried again.
_ATTEMPTS = 5

BatchWork = Callable[[Database, Sequence[str]], Awaitable[list[SeriesDrift]]]


async def check_catalog_command(
    url: str,
    series_ids: Sequence[str] | None,
    out: TextIO,
    shown: int = DEFAULT_SHOWN,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Print the first `shown` differences between the catalog (and rollups) of the series named,
    or of every series, and their readings, then how many; returns how many there are."""
    report = DifferenceReport(out, shown)
    async with open_database(url, SETTINGS) as database:
        checked = 0
        async for batch in _batches(database, series_ids, batch_size):
            checked += len(batch)
            for drift in await _attempted(check_catalog, database, batch):
                for line in drift_lines(drift):
                    report.add(drift.series_id, line)
    report.summary()
    if not report.found:
        print(f"checked {_series(checked)}: the catalog and the rollups are those of the readings", file=out)
    return report.found


async def rebuild_catalog_command(
    url: str,
    series_ids: Sequence[str] | None,
    out: TextIO,
    shown: int = DEFAULT_SHOWN,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Repair the catalog figures and rollups of the series named, or of every series, printing
    the first `shown` series repaired and a summary; returns 0 (a failure raises)."""
    report = DifferenceReport(out, shown)
    began = time.perf_counter()
    async with open_database(url, SETTINGS) as database:
        checked = 0
        async for batch in _batches(database, series_ids, batch_size):
            checked += len(batch)
            for drift in await _attempted(repair_catalog, database, batch):
                report.add(drift.series_id, repair_line(drift))
    left_out = report.found - min(report.found, shown)
    print(
        f"checked {_series(checked)} and repaired {_series(report.found)} "
        f"in {time.perf_counter() - began:.2f} s" + (f" ({left_out:,} not shown)" if left_out else ""),
        file=out,
    )
    return 0


async def _batches(
    database: Database, series_ids: Sequence[str] | None, batch_size: int
) -> AsyncIterator[list[str]]:
    """The series named (in one batch per `batch_size`), or every series in the catalog or the
    readings, batch by batch in the database's order of series_id."""
    if series_ids is not None:
        chosen = await in_lock_order(database, series_ids)
        for start in range(0, len(chosen), batch_size):
            yield chosen[start : start + batch_size]
        return
    after = None
    while batch := await next_series_ids(database, after, batch_size):
        yield batch
        after = batch[-1]


async def _attempted(work: BatchWork, database: Database, batch: Sequence[str]) -> list[SeriesDrift]:
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await work(database, batch)
        except ConcurrencyConflictError:
            if attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def drift_lines(drift: SeriesDrift) -> list[str]:
    """One line per thing that differs in the series."""
    name = repr(drift.series_id)
    lines = []
    stored, derived = drift.stored, drift.derived
    if stored is None:
        lines.append(f"{name} is not in the catalog; the readings give {_figures(derived)}")
    elif stored != derived:
        lines.append(f"{name} catalog: {_figures(stored)}; the readings give {_figures(derived)}")
    if drift.rollups_due:
        lines.append(rollups_due_line(drift.series_id))
    lines.extend(mismatch_line(mismatch) for mismatch in drift.rollup_mismatches)
    return lines


def repair_line(drift: SeriesDrift) -> str:
    """One line per series repaired: what it had, and what it was given."""
    done = []
    if drift.stored is None:
        done.append(f"added to the catalog with {_figures(drift.derived)}")
    elif drift.figures_differ:
        done.append(f"catalog {_figures(drift.stored)}, now {_figures(drift.derived)}")
    if drift.rollups_due:
        done.append("rolled up")
    elif drift.rollup_mismatches:
        done.append(f"rolled up again ({len(drift.rollup_mismatches):,} rollup rows differed)")
    return f"repaired {drift.series_id!r}: {'; '.join(done)}"


def _figures(figures: ReadingFigures) -> str:
    return (
        f"{figures.reading_count:,} readings, first {_time(figures.first_reading_time)}, "
        f"last {_time(figures.last_reading_time)}"
    )


def _time(instant: datetime | None) -> str:
    return "none" if instant is None else instant.isoformat()


def _series(count: int) -> str:
    return f"{count:,} series"
