"""The operator's rollup commands, run against the database directly: rebuild rollups from the
readings (after readings were loaded behind the service's back, or to mend what a check found),
and check them against the readings."""

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from timeseries_aggregation.difference_report import DEFAULT_SHOWN, DifferenceReport
from timeseries_aggregation.storage.database import Database, PoolSettings, open_database
from timeseries_aggregation.storage.rollups import (
    RollupMismatch,
    check_series_rollups,
    due_for_rollups,
    rebuild_series_rollups,
    series_with_rollups_due,
)
from timeseries_aggregation.wording import counted

# A rebuild or check reads a series' readings in one statement: a long history takes longer
# than the server's per-statement limit allows a call.
SETTINGS = PoolSettings(max_size=1, write_max_size=1, statement_timeout_seconds=3600.0)


async def rebuild_rollups(
    url: str,
    series_ids: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    out: TextIO,
) -> int:
    """Rebuild the rollups of the series named (or of every series that is rolled up or should
    be); returns how many of the series named the catalog lacks."""
    missing = 0
    async with open_database(url, SETTINGS) as database:
        for series_id in await _chosen(database, series_ids):
            began = time.perf_counter()
            if await rebuild_series_rollups(database, series_id, start, end):
                print(
                    f"rebuilt the rollups of {series_id!r} in {time.perf_counter() - began:.2f} s", file=out
                )
            else:
                print(f"no series {series_id!r} in the catalog", file=out)
                missing += 1
    return missing


_NOT_DUE = "no series, or none of its hours holds two readings"


async def check_rollups(
    url: str,
    series_ids: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    out: TextIO,
    shown: int = DEFAULT_SHOWN,
) -> int:
    """Compare the rollups of the series named (or of every series that is rolled up or should
    be) with their readings, printing the first `shown` differences (a rollup row, or a series
    without rollups that should have them); returns how many there are."""
    report = DifferenceReport(out, shown)
    async with open_database(url, SETTINGS) as database:
        for series_id in await _chosen(database, series_ids):
            mismatches = await check_series_rollups(database, series_id, start, end)
            if mismatches is None:
                if await due_for_rollups(database, series_id):
                    report.add(series_id, rollups_due_line(series_id))
                else:
                    print(f"{series_id!r} is not rolled up ({_NOT_DUE})", file=out)
                continue
            for mismatch in mismatches:
                report.add(series_id, mismatch_line(mismatch))
            if not mismatches:
                print(f"{series_id!r}: the rollups are those of the readings", file=out)
    report.summary()
    return report.found


async def _chosen(database: Database, series_ids: Sequence[str] | None) -> list[str]:
    """The series named, or every series that is rolled up or should be."""
    return list(series_ids) if series_ids is not None else await series_with_rollups_due(database)


def rollups_due_line(series_id: str) -> str:
    return f"{series_id!r} has no rollups, though an hour holds more than one of its readings"


def mismatch_line(mismatch: RollupMismatch) -> str:
    return (
        f"{mismatch.series_id!r} {mismatch.rollup} {mismatch.bucket_start.isoformat()}: stored "
        f"{_figures(mismatch.stored)}, the readings give {_figures(mismatch.expected)}"
    )


def _figures(figures: tuple[float, float, float, int] | None) -> str:
    if figures is None:
        return "nothing"
    total, minimum, maximum, count = figures
    return f"total {total!r}, min {minimum!r}, max {maximum!r}, {counted(count, 'reading')}"
