"""The operator's rollup commands, run against the database directly: rebuild rollups from the
readings (after readings were loaded behind the service's back, or to mend what a check found),
and check them against the readings."""

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from timeseries_aggregation.storage.database import Database, PoolSettings, open_database
from timeseries_aggregation.storage.rollups import (
    check_series_rollups,
    rebuild_series_rollups,
    rolled_up_series,
)
from timeseries_aggregation.wording import counted

# A rebuild or check reads a series' readings in one statement: a long history takes longer
# than the server's per-statement limit allows a call.
_SETTINGS = PoolSettings(max_size=1, write_max_size=1, statement_timeout_seconds=3600.0)


async def rebuild_rollups(
    url: str,
    series_ids: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    out: TextIO,
) -> int:
    """Rebuild the rollups of the series named (or of every rolled-up series); returns how many
    of the series named the catalog lacks."""
    missing = 0
    async with open_database(url, _SETTINGS) as database:
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


async def check_rollups(
    url: str,
    series_ids: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    out: TextIO,
) -> int:
    """Compare the rollups of the series named (or of every rolled-up series) with their
    readings, printing each rollup row that differs; returns how many differ."""
    differing = 0
    async with open_database(url, _SETTINGS) as database:
        for series_id in await _chosen(database, series_ids):
            mismatches = await check_series_rollups(database, series_id, start, end)
            if mismatches is None:
                print(
                    f"{series_id!r} is not rolled up (no series, or none of its hours holds two readings)",
                    file=out,
                )
                continue
            for mismatch in mismatches:
                print(
                    f"{series_id!r} {mismatch.rollup} {mismatch.bucket_start.isoformat()}: stored "
                    f"{_figures(mismatch.stored)}, the readings give {_figures(mismatch.expected)}",
                    file=out,
                )
            differing += len(mismatches)
            if not mismatches:
                print(f"{series_id!r}: the rollups are those of the readings", file=out)
    return differing


async def _chosen(database: Database, series_ids: Sequence[str] | None) -> list[str]:
    """The series named, or every rolled-up series."""
    return list(series_ids) if series_ids is not None else await rolled_up_series(database)


def _figures(figures: tuple[float, float, float, int] | None) -> str:
    if figures is None:
        return "nothing"
    total, minimum, maximum, count = figures
    return f"total {total!r}, min {minimum!r}, max {maximum!r}, {counted(count, 'reading')}"
