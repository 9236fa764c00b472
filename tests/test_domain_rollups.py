"""Which hours a stream touched, and what its readings add to them."""

from datetime import UTC, datetime

import numpy as np
import pytest

from timeseries_aggregation.domain.batch import ReadingBatch, unix_micros
from timeseries_aggregation.domain.rollups import (
    MAX_RUNS_PER_SERIES,
    HourlyAdditions,
    TouchedHours,
    day_runs,
)

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


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


def test_additions_are_the_figures_of_each_hour_of_the_dense_series_copied() -> None:
    rng = np.random.default_rng(7)
    additions = HourlyAdditions()
    expected: dict[tuple[str, int], list[float]] = {}
    start = unix_micros(datetime(2025, 1, 1, tzinfo=UTC))
    # Three chunks: "dense" every 10 minutes (hours split between chunks), "sparse" hourly
    # between it and "late" (dense only from the second chunk on), all interleaved by key.
    for chunk_number in range(3):
        series, times, values = [], [], []
        for name, step_minutes, first in (
            ("dense", 10, 0),
            ("sparse", 60, 0),
            ("late", 60 if chunk_number == 0 else 5, 0),
        ):
            for k in range(25):
                minute = first + (chunk_number * 25 + k) * step_minutes
                series.append(name)
                times.append(start + minute * 60_000_000)
                values.append(float(rng.integers(0, 1000)) / 8)
                if name == "dense":
                    expected.setdefault((name, (start + minute * 60_000_000) // 3_600_000_000), []).append(
                        values[-1]
                    )
        names = sorted(set(series))
        additions.add(
            ReadingBatch(
                series_ids=names,
                series_index=np.array([names.index(name) for name in series], dtype=np.int32),
                time_unix_micros=np.array(times, dtype=np.int64),
                quantity_kwh=np.array(values),
            ).sorted_by_key()
        )
    assert additions.added == {"dense"}
    assert additions.missed == {"sparse", "late"}
    # Left out: the first hour, which a rewrite will recompute.
    first_hour = start // 3_600_000_000
    figures = additions.figures({"dense", "sparse"}, {"dense": [(first_hour, first_hour + 1)]})
    got = {
        (name, int(hour)): (total, minimum, maximum, int(count))
        for name, hour, total, minimum, maximum, count in zip(
            figures.series_ids,
            figures.hours,
            figures.totals,
            figures.minimums,
            figures.maximums,
            figures.counts,
            strict=True,
        )
    }
    assert got == {
        key: (sum(values), min(values), max(values), len(values))
        for key, values in expected.items()
        if key[1] != first_hour
    }


def test_additions_stop_at_their_bound_and_leave_those_series_to_be_recomputed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("timeseries_aggregation.domain.rollups.MAX_ADDED_HOURS", 3)
    additions = HourlyAdditions()
    times = [datetime(2025, 1, 1, hour, minute, tzinfo=UTC) for hour in range(5) for minute in (0, 30)]
    additions.add(
        ReadingBatch(
            series_ids=["a"],
            series_index=np.zeros(len(times), dtype=np.int32),
            time_unix_micros=np.array([unix_micros(t) for t in times], dtype=np.int64),
            quantity_kwh=np.ones(len(times)),
        )
    )
    assert additions.full
    assert additions.added == set()
    assert additions.missed == {"a"}
    assert additions.figures({"a"}, {}).series_ids == []
