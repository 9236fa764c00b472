"""Property: whatever a stream carries (new and stored keys of several series, in any order,
across chunk boundaries, so that one stream copies some chunks and upserts the rest), the
rollups it leaves are those of the readings, and every question asked twice (once before the
process knows the series are rolled up, once after) gets the answer plain SQL gives over the
readings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import batches, catalog_matches_readings, ingest, query_all_pages, reading
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.storage import readings as readings_storage

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

FIRST = datetime(2025, 3, 29, 20, tzinfo=UTC)  # Berlin's clocks go forward in the window
SPAN_MINUTES = 3 * 24 * 60

# A run of readings, as meters send them: which series, minutes after FIRST of its first
# reading, minutes between readings, how many, and a value to start from in eighths of a kWh
# (sums of eighths are exact in any order, so the service's sums and plain SQL's agree to the
# last bit).
run_strategy = st.tuples(
    st.integers(min_value=0, max_value=2),
    st.integers(min_value=0, max_value=SPAN_MINUTES),
    st.sampled_from([1, 7, 15, 60, 180]),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=-8000, max_value=8000),
)
stream_strategy = st.lists(run_strategy, min_size=1, max_size=6)

Run = tuple[int, int, int, int, int]
Key = tuple[int, int]  # series, minute


def _readings(runs: list[Run]) -> dict[Key, int]:
    """The readings of runs, by key; a later run's value wins, as in a stream."""
    readings: dict[Key, int] = {}
    for series, first, step, count, value in runs:
        for index in range(count):
            readings[(series, first + index * step)] = value + 3 * index
    return readings


# Buckets as plain SQL makes them from the readings: per series, the bucket's start in UTC,
# total, minimum, maximum and count.
_DAYS_IN = """
    SELECT (date_trunc('day', time AT TIME ZONE $2) AT TIME ZONE $2) AS bucket_start,
           sum(quantity_kwh), min(quantity_kwh), max(quantity_kwh), count(*)
    FROM readings WHERE series_id = $1 GROUP BY 1 ORDER BY 1
"""
_HOURS = """
    SELECT date_trunc('hour', time) AS bucket_start,
           sum(quantity_kwh), min(quantity_kwh), max(quantity_kwh), count(*)
    FROM readings WHERE series_id = $1 GROUP BY 1 ORDER BY 1
"""

Row = tuple[datetime, float, float, float, int]


def _requests(stream: list[tuple[Key, int]], names: list[str], size: int) -> list[pb.IngestReadingsRequest]:
    sent = [
        reading(names[series], FIRST + timedelta(minutes=minute), eighths / 8)
        for (series, minute), eighths in stream
    ]
    return batches(sent, size)


def _rows(buckets: list[pb.Bucket]) -> list[Row]:
    return [
        (
            b.start_time.ToDatetime(tzinfo=UTC),
            b.total_quantity_kwh,
            b.min_quantity_kwh,
            b.max_quantity_kwh,
            b.reading_count,
        )
        for b in buckets
    ]


async def _asked_twice(
    stub: TimeseriesAggregationServiceAsyncStub, sql: asyncpg.Connection, series_id: str
) -> None:
    questions = [
        (pb.GRANULARITY_HOURLY, "UTC", _HOURS, ()),
        (pb.GRANULARITY_DAY_OF_MONTH, "UTC", _DAYS_IN, ("UTC",)),
        (pb.GRANULARITY_DAY_OF_MONTH, "Europe/Berlin", _DAYS_IN, ("Europe/Berlin",)),
    ]
    for granularity, zone, statement, arguments in questions:
        expected = [tuple(row) for row in await sql.fetch(statement, series_id, *arguments)]
        for selected in ("series", "portfolio"):
            request = pb.QueryAggregatesRequest(granularity=granularity, time_zone=zone, page_size=1000)
            if selected == "series":
                request.series_id = series_id
            else:
                request.selector.series_ids.append(series_id)
            for asked in ("first", "again"):
                answer = _rows(await query_all_pages(stub, request))
                assert answer == expected, (zone, granularity, selected, asked)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(stream_strategy, max_size=2),
    streams=st.lists(stream_strategy, min_size=1, max_size=2),
    chunk_readings=st.integers(min_value=5, max_value=80),
    message_readings=st.integers(min_value=1, max_value=50),
    data=st.data(),
)
async def test_rollups_follow_whole_streams(
    stub: TimeseriesAggregationServiceAsyncStub,
    sql: asyncpg.Connection,
    before: list[list[Run]],
    streams: list[list[Run]],
    chunk_readings: int,
    message_readings: int,
    data: st.DataObject,
) -> None:
    names = [f"stream-property-{uuid.uuid4()}-{index}" for index in range(3)]
    # What was stored before, in streams of the usual chunk size.
    stored: dict[Key, int] = {}
    for runs in before:
        stream = list(_readings(runs).items())
        await ingest(stub, _requests(stream, names, 500))
        stored.update(stream)
    with pytest.MonkeyPatch.context() as patch:
        # Small chunks, so that a stream crosses chunk boundaries and can copy some chunks
        # before it meets a stored key and upserts the rest.
        patch.setattr(readings_storage, "COPY_CHUNK_READINGS", chunk_readings)
        patch.setattr(readings_storage, "ROUTED_COPY_CHUNK_READINGS", chunk_readings * 2)
        for runs in streams:
            stream = list(_readings(runs).items())
            # Keys stored before, or sent earlier in the stream, again with other values,
            # somewhere in the stream (at its end, often, as a loader's corrections come).
            known = {**stored, **dict(stream)}
            again = data.draw(st.lists(st.sampled_from(sorted(known)), max_size=20))
            position = data.draw(st.one_of(st.just(len(stream)), st.integers(0, len(stream))))
            stream[position:position] = [(key, known[key] + 1) for key in again]
            await ingest(stub, _requests(stream, names, message_readings))
            stored.update(stream)
    await catalog_matches_readings(sql)
    for series_id in names:
        if await sql.fetchval("SELECT count(*) FROM series WHERE series_id = $1", series_id):
            await _asked_twice(stub, sql, series_id)
