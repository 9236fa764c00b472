"""Which rollups a query can use, zone by zone, and which hours a stream touched."""

from datetime import UTC, datetime

import numpy as np
import pytest

from timeseries_aggregation.domain.aggregation import Granularity, zone_history
from timeseries_aggregation.domain.batch import ReadingBatch, unix_micros
from timeseries_aggregation.domain.rollups import (
    MAX_RUNS_PER_SERIES,
    RollupPlan,
    RollupTier,
    TouchedHours,
    day_runs,
    rollup_plan,
)

HOURS = RollupPlan(RollupTier.HOURS, check_hours=False)
CHECKED_HOURS = RollupPlan(RollupTier.HOURS, check_hours=True)
DAYS = RollupPlan(RollupTier.DAYS, check_hours=False)


@pytest.mark.parametrize(
    ("zone", "granularity", "plan"),
    [
        # Always at UTC: days, and everything made of days, from daily rollups.
        ("UTC", Granularity.DAY_OF_MONTH, DAYS),
        ("Atlantic/Reykjavik", Granularity.MONTHLY, DAYS),
        ("UTC", Granularity.HOURLY, HOURS),
        # Whole-hour offsets changed on whole hours: hours fit in every bucket.
        ("Europe/Berlin", Granularity.DAY_OF_MONTH, HOURS),
        ("America/New_York", Granularity.YEARLY, HOURS),
        ("Etc/GMT-5", Granularity.WEEKLY, HOURS),
        # Offsets with minutes, or changes at 00:01: days from checked hours; hours from readings.
        ("Asia/Kolkata", Granularity.DAY_OF_MONTH, CHECKED_HOURS),
        ("Asia/Kolkata", Granularity.HOURLY, None),
        ("America/Moncton", Granularity.MONTHLY, CHECKED_HOURS),
        ("America/Moncton", Granularity.HOURLY, None),
        ("Australia/Lord_Howe", Granularity.HOURLY, None),
        # Buckets shorter than an hour: readings.
        ("UTC", Granularity.QUARTER_HOURLY, None),
        ("Europe/Berlin", Granularity.HALF_HOURLY, None),
    ],
)
def test_the_rollups_a_query_reads_depend_on_its_zone_and_granularity(
    zone: str, granularity: Granularity, plan: RollupPlan | None
) -> None:
    assert rollup_plan(granularity, zone) == plan


def test_a_zones_changes_are_found_to_the_second() -> None:
    history = zone_history("Europe/Berlin")
    assert history.offsets == frozenset({3600, 7200})
    # Summer time of 2025: from 01:00 UTC on March 30 to 01:00 UTC on October 26.
    assert int(datetime(2025, 3, 30, 1, tzinfo=UTC).timestamp()) in history.changes
    assert int(datetime(2025, 10, 26, 1, tzinfo=UTC).timestamp()) in history.changes
    # Moncton changed at 00:01 local time until 2006.
    assert (
        int(datetime(2006, 10, 29, 3, 1, tzinfo=UTC).timestamp()) in zone_history("America/Moncton").changes
    )


def batch(*readings: tuple[str, str]) -> ReadingBatch:
    """A batch sorted by key from (series, ISO time) pairs."""
    series_ids = sorted({series_id for series_id, _ in readings})
    return ReadingBatch(
        series_ids=series_ids,
        series_index=np.array([series_ids.index(s) for s, _ in readings], dtype=np.int32),
        time_unix_micros=np.array(
            [unix_micros(datetime.fromisoformat(t).replace(tzinfo=UTC)) for _, t in readings], dtype=np.int64
        ),
        quantity_kwh=np.zeros(len(readings)),
    ).sorted_by_key()


def hour(iso: str) -> int:
    return unix_micros(datetime.fromisoformat(iso).replace(tzinfo=UTC)) // 3_600_000_000


def test_touched_hours_are_runs_per_series_and_dense_series_are_found() -> None:
    touched = TouchedHours()
    touched.add(
        batch(
            ("a", "2025-01-01T00:00"),
            ("a", "2025-01-01T01:00"),
            ("a", "2025-01-01T05:00"),
            ("b", "2025-01-01T00:10"),
            ("b", "2025-01-01T00:10"),  # a key repeated in an upsert chunk is one instant
            ("c", "2025-01-01T00:10"),
            ("c", "2025-01-01T00:20"),
        )
    )
    touched.add(batch(("a", "2025-01-01T02:00"), ("a", "2025-01-01T02:30")))
    assert touched.runs == {
        "a": [
            (hour("2025-01-01T00:00"), hour("2025-01-01T03:00")),
            (hour("2025-01-01T05:00"), hour("2025-01-01T06:00")),
        ],
        "b": [(hour("2025-01-01T00:00"), hour("2025-01-01T01:00"))],
        "c": [(hour("2025-01-01T00:00"), hour("2025-01-01T01:00"))],
    }
    assert touched.dense == {"a", "c"}
    assert day_runs(touched.runs["a"]) == [
        (hour("2025-01-01T00:00") // 24, hour("2025-01-01T00:00") // 24 + 1)
    ]


def test_scattered_hours_beyond_the_bound_become_one_span() -> None:
    touched = TouchedHours()
    times = [datetime(2020, 1, 1, tzinfo=UTC).timestamp() + 7200 * n for n in range(MAX_RUNS_PER_SERIES + 1)]
    touched.add(
        ReadingBatch(
            series_ids=["a"],
            series_index=np.zeros(len(times), dtype=np.int32),
            time_unix_micros=np.array([int(t) * 1_000_000 for t in times], dtype=np.int64),
            quantity_kwh=np.zeros(len(times)),
        )
    )
    first = hour("2020-01-01T00:00")
    assert touched.runs["a"] == [(first, first + 2 * MAX_RUNS_PER_SERIES + 1)]
