"""Quarter hours, half hours, ISO weeks, quarters and years: where their buckets start, and
their labels, through the service (the property test holds them to the bucketing rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.support import ingest, query_all_pages, reading, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.granularities import GRANULARITIES

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


async def buckets(
    stub: Stub, readings: list[pb.Reading], granularity: pb.Granularity, time_zone: str
) -> list[tuple[str, str, str, float]]:
    """(period, start, end, total) of each bucket of the readings."""
    await ingest(stub, [pb.IngestReadingsRequest(readings=readings)])
    found = await query_all_pages(
        stub,
        pb.QueryAggregatesRequest(
            series_id=readings[0].series_id, granularity=granularity, time_zone=time_zone
        ),
    )
    return [
        (b.period, b.start_time.ToJsonString(), b.end_time.ToJsonString(), b.total_quantity_kwh)
        for b in found
    ]


def every_minute(series_id: str, start: str, minutes: int) -> list[pb.Reading]:
    first = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return [reading(series_id, first + timedelta(minutes=m), 1.0) for m in range(minutes)]


async def test_quarter_hours_start_at_local_quarters_in_kathmandu(stub: Stub) -> None:
    # Kathmandu is UTC+05:45: its quarter hours are UTC quarter hours, its hours are not.
    found = await buckets(
        stub, every_minute("np", "2025-10-01T07:30", 30), pb.GRANULARITY_QUARTER_HOURLY, "Asia/Kathmandu"
    )
    assert found == [
        ("2025-10-01T13:15", "2025-10-01T07:30:00Z", "2025-10-01T07:45:00Z", 15.0),
        ("2025-10-01T13:30", "2025-10-01T07:45:00Z", "2025-10-01T08:00:00Z", 15.0),
    ]


async def test_half_hours_keep_the_two_hours_of_a_night_when_the_clocks_go_back_apart(stub: Stub) -> None:
    # Berlin, 26 October 2025: 02:00 to 03:00 happens twice (00:00-01:00 and 01:00-02:00 UTC).
    found = await buckets(
        stub, every_minute("de", "2025-10-26T00:00", 120), pb.GRANULARITY_HALF_HOURLY, "Europe/Berlin"
    )
    assert [period for period, *_ in found] == [
        "2025-10-26T02:00",
        "2025-10-26T02:30",
        "2025-10-26T02:00",
        "2025-10-26T02:30",
    ]
    assert [total for *_, total in found] == [30.0] * 4


async def test_weeks_are_iso_weeks_from_local_monday_midnight(stub: Stub) -> None:
    # Sunday 28 and Monday 29 December 2024 in Berlin: the Monday starts ISO week 1 of 2025.
    readings = [
        reading("w", "2024-12-29T22:59:00", 1.0),  # Sunday 23:59 local
        reading("w", "2024-12-29T23:00:00", 2.0),  # Monday 00:00 local
        reading("w", "2025-03-30T21:59:00", 4.0),  # Sunday of the spring change, 23:59 local
    ]
    found = await buckets(stub, readings, pb.GRANULARITY_WEEKLY, "Europe/Berlin")
    assert found == [
        ("2024-W52", "2024-12-22T23:00:00Z", "2024-12-29T23:00:00Z", 1.0),
        ("2025-W01", "2024-12-29T23:00:00Z", "2025-01-05T23:00:00Z", 2.0),
        # A week with the spring change is an hour short.
        ("2025-W13", "2025-03-23T23:00:00Z", "2025-03-30T22:00:00Z", 4.0),
    ]


@pytest.mark.parametrize(
    ("granularity", "expected"),
    [
        (
            pb.GRANULARITY_QUARTERLY,
            [
                ("2025-Q1", "2024-12-31T23:00:00Z", "2025-03-31T22:00:00Z", 1.0),
                ("2025-Q4", "2025-09-30T22:00:00Z", "2025-12-31T23:00:00Z", 2.0),
            ],
        ),
        (pb.GRANULARITY_YEARLY, [("2025", "2024-12-31T23:00:00Z", "2025-12-31T23:00:00Z", 3.0)]),
    ],
)
async def test_quarters_and_years_follow_the_local_calendar(
    stub: Stub, granularity: pb.Granularity, expected: list[tuple[str, str, str, float]]
) -> None:
    readings = [reading("q", "2024-12-31T23:00:00", 1.0), reading("q", "2025-12-31T22:59:00", 2.0)]
    assert await buckets(stub, readings, granularity, "Europe/Berlin") == expected


async def test_new_granularities_page_and_continue(stub: Stub) -> None:
    await ingest(stub, [pb.IngestReadingsRequest(readings=every_minute("p", "2025-01-01T00:00", 120))])
    request = pb.QueryAggregatesRequest(
        series_id="p", granularity=pb.GRANULARITY_QUARTER_HOURLY, start_time=ts("2025-01-01"), page_size=3
    )
    found = await query_all_pages(stub, request)
    assert len(found) == 8
    assert [b.reading_count for b in found] == [15] * 8


def test_the_granularity_table_numbers_every_granularity_as_the_proto_does() -> None:
    assert {f"GRANULARITY_{info.granularity.name}": info.proto_value for info in GRANULARITIES} == {
        name: value for name, value in pb.Granularity.items() if value
    }
