"""Every time zone the service accepts, around each of its clock changes of 2025 (and of a few
older years, with changes of other kinds): the quarter-hourly, half-hourly, hourly and daily
buckets the service answers, by series and through a selector with empty buckets, are those of
an independent reference of the rule (tests/zone_reference.py), and count every reading once."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.support import ingest, query_all_pages, ts
from tests.zone_reference import (
    ACCEPTED_ZONES,
    HISTORICAL_YEARS,
    Stretch,
    Window,
    reference_buckets,
    stretch_holding,
    windows,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.granularities import Granularity

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

# Some 5,500 queries: half a minute on the embedded server, longer on a cluster.
pytestmark = pytest.mark.timeout(300)

GRANULARITIES = {
    Granularity.QUARTER_HOURLY: pb.GRANULARITY_QUARTER_HOURLY,
    Granularity.HALF_HOURLY: pb.GRANULARITY_HALF_HOURLY,
    Granularity.HOURLY: pb.GRANULARITY_HOURLY,
    Granularity.DAY_OF_MONTH: pb.GRANULARITY_DAY_OF_MONTH,
}
# Small enough that the quarter hours of a window take two pages.
PAGE_SIZE = 25
# As many as the test server's query pool has connections.
CONCURRENT_QUERIES = 4
MESSAGE_READINGS = 20_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)

# A bucket as compared: start, end, period, reading count, total, minimum and maximum.
Row = tuple[datetime, datetime, str, int, float, float, float]


@dataclasses.dataclass(frozen=True, slots=True)
class SweptZone:
    """A zone's series: readings in windows around its clock changes, each worth its position
    in the series (whole kWh, so that every sum is exact)."""

    zone_name: str
    windows: tuple[Window, ...]
    readings: dict[datetime, float]

    @property
    def series_id(self) -> str:
        return f"sweep {self.zone_name}"

    def readings_in(self, start: datetime, end: datetime) -> list[float]:
        return [quantity for instant, quantity in self.readings.items() if start <= instant < end]


@dataclasses.dataclass(frozen=True, slots=True)
class Question:
    """One query of the sweep and the buckets the reference expects of it."""

    zone: SweptZone
    granularity: Granularity
    start: datetime
    end: datetime
    # Through a selector with empty buckets, rather than by series_id without.
    selector: bool
    expected: list[Row]

    def request(self) -> pb.QueryAggregatesRequest:
        request = pb.QueryAggregatesRequest(
            granularity=GRANULARITIES[self.granularity],
            start_time=ts(self.start),
            end_time=ts(self.end),
            time_zone=self.zone.zone_name,
            page_size=PAGE_SIZE,
        )
        if self.selector:
            request.selector.series_ids.append(self.zone.series_id)
            request.include_empty_buckets = True
        else:
            request.series_id = self.zone.series_id
        return request

    def describe(self) -> str:
        way = "through a selector, with empty buckets" if self.selector else "by series_id"
        return f"{self.zone.zone_name} {self.granularity.value} {way}, [{_utc(self.start)}, {_utc(self.end)})"


def swept_zone(zone_name: str, year: int) -> SweptZone:
    zone_windows = tuple(windows(zone_name, year))
    times = [instant for window in zone_windows for instant in window.reading_times()]
    return SweptZone(zone_name, zone_windows, {instant: float(n) for n, instant in enumerate(times, 1)})


def expected_rows(zone: SweptZone, window: Window, granularity: Granularity) -> list[Row]:
    """The reference's buckets of a window with the readings each holds, in time order."""
    stretches = reference_buckets(zone.zone_name, window.start, window.end)[granularity]
    held: dict[Stretch, list[float]] = defaultdict(list)
    for instant, quantity in zone.readings.items():
        if window.start <= instant < window.end:
            held[stretch_holding(stretches, instant)].append(quantity)
    return [
        (
            stretch.start,
            stretch.end,
            stretch.label,
            len(held[stretch]),
            sum(held[stretch]),
            min(held[stretch], default=0.0),
            max(held[stretch], default=0.0),
        )
        for stretch in stretches
    ]


def questions(zones: list[SweptZone]) -> list[Question]:
    """By series_id, a zone's buckets that hold readings from its first window to its last; through
    a selector, every bucket of each window."""
    asked = []
    for zone in zones:
        for granularity in GRANULARITIES:
            per_window = {window: expected_rows(zone, window, granularity) for window in zone.windows}
            asked.append(
                Question(
                    zone,
                    granularity,
                    zone.windows[0].start,
                    zone.windows[-1].end,
                    selector=False,
                    expected=[row for rows in per_window.values() for row in rows if row[3]],
                )
            )
            asked.extend(
                Question(zone, granularity, window.start, window.end, selector=True, expected=rows)
                for window, rows in per_window.items()
            )
    return asked


def series_readings(zone: SweptZone) -> pb.SeriesReadings:
    return pb.SeriesReadings(
        series_id=zone.series_id,
        time_unix_micros=[(instant - _EPOCH) // _ONE_MICROSECOND for instant in zone.readings],
        quantity_kwh=list(zone.readings.values()),
    )


def messages(zones: list[SweptZone]) -> list[pb.IngestReadingsRequest]:
    """The zones' readings in messages of about MESSAGE_READINGS readings."""
    found = [pb.IngestReadingsRequest()]
    held = 0
    for zone in zones:
        if held + len(zone.readings) > MESSAGE_READINGS:
            found.append(pb.IngestReadingsRequest())
            held = 0
        found[-1].series_readings.append(series_readings(zone))
        held += len(zone.readings)
    return found


def _utc(instant: datetime) -> str:
    return f"{instant:%Y-%m-%dT%H:%M:%S.%f}".removesuffix(".000000").removesuffix(":00") + "Z"


def _shown(row: Row) -> str:
    start, end, period, count, total, minimum, maximum = row
    return (
        f"[{_utc(start)}, {_utc(end)}) {period}: {count} readings, {total:g} kWh ({minimum:g} to {maximum:g})"
    )


def _row(bucket: pb.Bucket) -> Row:
    return (
        bucket.start_time.ToDatetime(tzinfo=UTC),
        bucket.end_time.ToDatetime(tzinfo=UTC),
        bucket.period,
        bucket.reading_count,
        bucket.total_quantity_kwh,
        bucket.min_quantity_kwh,
        bucket.max_quantity_kwh,
    )


def problems(question: Question, rows: list[Row]) -> list[str]:
    """How the service's buckets differ from the reference's, and where they overlap, leave a
    gap (with empty buckets) or count a reading other than once."""
    found = [
        *(f"expected {_shown(row)}" for row in question.expected if row not in rows),
        *(f"got {_shown(row)}" for row in rows if row not in question.expected),
    ]
    if not found and rows != question.expected:
        found.append("the buckets are out of order")
    for before, after in itertools.pairwise(rows):
        if before[1] > after[0] or (question.selector and before[1] != after[0]):
            found.append(f"{_shown(before)} is followed by {_shown(after)}")
    readings = question.zone.readings_in(question.start, question.end)
    counted = (sum(row[3] for row in rows), sum(row[4] for row in rows))
    if counted != (len(readings), sum(readings)):
        found.append(
            f"counted {counted[0]} readings of {counted[1]:g} kWh, not {len(readings)} of {sum(readings):g}"
        )
    return found


async def sweep(stub: TimeseriesAggregationServiceAsyncStub, zones: list[SweptZone]) -> list[str]:
    """Ingest the zones' readings, ask every question of them, and say where the answers are
    not the reference's."""
    # Seconds of reading zoneinfo minute by minute: off the event loop the server shares.
    asked = await asyncio.to_thread(questions, zones)
    response = await ingest(stub, messages(zones))
    assert response.readings_received == sum(len(zone.readings) for zone in zones)
    slots = asyncio.Semaphore(CONCURRENT_QUERIES)

    async def answer(question: Question) -> list[Row]:
        async with slots:
            return [_row(bucket) for bucket in await query_all_pages(stub, question.request())]

    answers = await asyncio.gather(*(answer(question) for question in asked))
    return [
        f"{question.describe()}:\n  " + "\n  ".join(differences)
        for question, rows in zip(asked, answers, strict=True)
        if (differences := problems(question, rows))
    ]


async def test_every_zone_buckets_as_the_reference_around_its_clock_changes_of_2025(
    stub: TimeseriesAggregationServiceAsyncStub,
) -> None:
    found = await sweep(stub, [swept_zone(zone_name, 2025) for zone_name in ACCEPTED_ZONES])

    assert not found, "\n".join(found)


async def test_zones_bucket_as_the_reference_around_clock_changes_of_other_kinds(
    stub: TimeseriesAggregationServiceAsyncStub,
) -> None:
    found = await sweep(stub, [swept_zone(zone_name, year) for zone_name, year in HISTORICAL_YEARS])

    assert not found, "\n".join(found)
