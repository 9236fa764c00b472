"""The buckets of a query's window as UTC instants: what the SQL is given to put rows in buckets.

The rule of domain/bucketing.py decides every boundary; the database does no time-zone
arithmetic. Where the buckets are all of one width (every hour of a whole-hour zone, every day
of a zone that keeps one offset) the grid is that width and a phase, and rows are binned by
arithmetic; elsewhere it is the list of the window's boundaries, and a row's bucket is the
number of boundaries at or before it (SQL's width_bucket over a timestamptz[]).
"""

import bisect
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from timeseries_aggregation.domain.bucketing import BucketSpan, bucket_containing, buckets_between
from timeseries_aggregation.domain.readings import EARLIEST_TIME, LATEST_TIME
from timeseries_aggregation.domain.zone_offsets import offset_changes, utc_offset
from timeseries_aggregation.granularities import GRANULARITY_INFO, Granularity

# The most boundaries a page's statement is given (8 bytes each): 54 years of days, 2 years of
# hours. Listing them costs 6 microseconds a bucket the first time a year is asked (then the
# years' lists are kept), and it runs in the service's event loop.
MAX_EXPLICIT_BUCKETS = 20_000


@dataclass(frozen=True, slots=True)
class FixedWidthBuckets:
    """Buckets of one width everywhere: each starts a whole number of widths after origin."""

    width_seconds: int
    origin_unix_seconds: int


@dataclass(frozen=True, slots=True)
class ZoneHistory:
    """The UTC offsets (seconds) a zone uses in the supported range, and the instants (Unix
    seconds) at which it changes from one to another."""

    changes: tuple[int, ...]
    # The offset in force before the first change, then after each.
    offsets_in_order: tuple[int, ...]

    @property
    def offsets(self) -> frozenset[int]:
        return frozenset(self.offsets_in_order)


@functools.cache
def zone_history(time_zone: str) -> ZoneHistory:
    """The zone's offsets and their changes in the supported range (domain/zone_offsets.py).
    About 50 ms, once per zone and process."""
    zone = ZoneInfo(time_zone)
    changes = offset_changes(zone, EARLIEST_TIME, LATEST_TIME)
    offsets = (utc_offset(zone, EARLIEST_TIME), *(change.offset for change in changes))
    return ZoneHistory(
        tuple(int(change.instant.timestamp()) for change in changes),
        tuple(int(offset.total_seconds()) for offset in offsets),
    )


@functools.cache
def fixed_width_buckets(granularity: Granularity, time_zone: str) -> FixedWidthBuckets | None:
    """The width and phase of the query's buckets when they never vary, else None.

    Local hours (and their quarters and halves) are all alike when the zone's offsets agree
    modulo the width and every change of offset falls on a bucket's start (true of every
    whole-hour zone, DST or not; not of Chatham, which changes at 02:45 between two offsets
    of the same phase); local days and weeks only when the zone never changes its offset.
    Months, quarters and years always vary.
    """
    info = GRANULARITY_INFO[granularity]
    if info.fixed_width is None:
        return None
    width, origin = info.fixed_width
    history = zone_history(time_zone)
    phases = {(origin - offset) % width for offset in history.offsets}
    if len(phases) != 1:
        return None
    phase = phases.pop()
    if not info.clock and history.changes:
        return None
    if any((change - phase) % width for change in history.changes):
        return None
    return FixedWidthBuckets(width_seconds=width, origin_unix_seconds=phase)


@dataclass(frozen=True, slots=True)
class FixedGrid:
    """Buckets of one width: bucket number n is [origin + n x width, origin + (n + 1) x width)."""

    granularity: Granularity
    zone: ZoneInfo
    width_seconds: int
    origin_unix_seconds: int

    def number(self, instant: datetime) -> int:
        """The number of the bucket holding an instant."""
        return (math.floor(instant.timestamp()) - self.origin_unix_seconds) // self.width_seconds

    def start_seconds(self, number: int) -> int:
        return self.origin_unix_seconds + number * self.width_seconds

    def span(self, number: int) -> tuple[int, int, str]:
        """Start and end (Unix seconds) and label of bucket `number`: every start is a local
        unit's start, so the label is that of the local time there."""
        start = self.start_seconds(number)
        local = datetime.fromtimestamp(start, self.zone)
        return start, start + self.width_seconds, GRANULARITY_INFO[self.granularity].label(local)

    def spans_of(self, numbers: Sequence[int]) -> list[tuple[int, int, str]]:
        """span() of many buckets at once: the local times by array arithmetic, and labels of
        hours and their parts, and of days, as numpy writes dates (as the labels are written)."""
        unit = _NUMPY_LABEL_UNITS.get(GRANULARITY_INFO[self.granularity].label_format)
        if unit is None:
            return [self.span(number) for number in numbers]
        starts = self.origin_unix_seconds + np.asarray(numbers, dtype=np.int64) * self.width_seconds
        history = zone_history(self.zone.key)
        periods = np.searchsorted(np.asarray(history.changes, dtype=np.int64), starts, side="right")
        local = starts + np.asarray(history.offsets_in_order, dtype=np.int64)[periods]
        numpy_unit, suffix = unit
        labels = np.datetime_as_string(local.astype("datetime64[s]"), unit=numpy_unit)
        width = self.width_seconds
        return [
            (start, start + width, label + suffix)
            for start, label in zip(starts.tolist(), labels.tolist(), strict=True)
        ]


@dataclass(frozen=True, slots=True)
class ExplicitGrid:
    """Consecutive buckets, numbered from 0: bucket n is spans[n]. The boundaries are their
    starts and the last one's end, so a row's bucket is the count of boundaries at or before
    it, less one."""

    spans: tuple[BucketSpan, ...]

    @property
    def boundaries(self) -> list[datetime]:
        return [span.start for span in self.spans] + [self.spans[-1].end]

    def number(self, instant: datetime) -> int:
        """The number of the bucket holding an instant of the grid; -1 before its first."""
        return bisect.bisect_right(self.spans, instant, key=lambda span: span.start) - 1

    def span(self, number: int) -> tuple[int, int, str]:
        span = self.spans[number]
        return int(span.start.timestamp()), int(span.end.timestamp()), span.period

    def spans_of(self, numbers: Sequence[int]) -> list[tuple[int, int, str]]:
        return [self.span(number) for number in numbers]


BucketGrid = FixedGrid | ExplicitGrid

# Label formats numpy writes a datetime64 in (its unit), and what follows it.
_NUMPY_LABEL_UNITS: dict[str, tuple[Literal["m", "h", "D"], str]] = {
    "%Y-%m-%dT%H:%M": ("m", ""),
    "%Y-%m-%dT%H:00": ("h", ":00"),
    "%Y-%m-%d": ("D", ""),
}


def grid_for(granularity: Granularity, time_zone: str, start: datetime, end: datetime) -> BucketGrid:
    """The buckets holding an instant of [start, end) (end after start): a FixedGrid where they
    are all of one width, else every one of them."""
    fixed = fixed_width_buckets(granularity, time_zone)
    if fixed is not None:
        return FixedGrid(granularity, ZoneInfo(time_zone), fixed.width_seconds, fixed.origin_unix_seconds)
    return ExplicitGrid(tuple(spans_between(granularity, time_zone, start, end)))


# The shortest local length of a bucket that no clock change touches, by unit.
_SHORTEST_UNIT = {
    "minutes": timedelta(minutes=1),
    "hours": timedelta(hours=1),
    "days": timedelta(days=1),
    "weeks": timedelta(days=7),
    "months": timedelta(days=28),
}


def bucket_count_bound(granularity: Granularity, time_zone: str, start: datetime, end: datetime) -> int:
    """At least as many as the buckets holding an instant of [start, end), without listing them:
    a bucket no clock change touches is as long as its local unit, and each change makes at
    most three more (it can cut one in two and bring back a stretch of another)."""
    info = GRANULARITY_INFO[granularity]
    shortest = _SHORTEST_UNIT[info.step_unit] * info.step
    changes = zone_history(time_zone).changes
    first, last = start.timestamp(), end.timestamp()
    inside = bisect.bisect_right(changes, last) - bisect.bisect_left(changes, first)
    return math.ceil((end - start) / shortest) + 3 * inside + 2


def spans_between(
    granularity: Granularity, time_zone: str, start: datetime, end: datetime
) -> Iterator[BucketSpan]:
    """Every bucket holding an instant of [start, end), in time order, from the years' lists."""
    last_start: datetime | None = None
    for spans in _year_lists(granularity, time_zone, start, end):
        low = max(bisect.bisect_right(spans, start, key=lambda span: span.start) - 1, 0)
        high = bisect.bisect_left(spans, end, key=lambda span: span.start)
        for span in spans[low:high]:
            # A bucket that reaches across the new year is in both years' lists.
            if last_start is None or span.start > last_start:
                last_start = span.start
                yield span


def _year_lists(
    granularity: Granularity, time_zone: str, start: datetime, end: datetime
) -> Iterator[tuple[BucketSpan, ...]]:
    for year in range(start.astimezone(UTC).year, end.astimezone(UTC).year + 1):
        yield _year_spans(granularity, time_zone, year)


@functools.lru_cache(maxsize=64)
def _year_spans(granularity: Granularity, time_zone: str, year: int) -> tuple[BucketSpan, ...]:
    """Every bucket holding an instant of a UTC year (a quarter of an hour's a year: 35,040)."""
    return tuple(
        buckets_between(
            datetime(year, 1, 1, tzinfo=UTC),
            datetime(year + 1, 1, 1, tzinfo=UTC),
            granularity,
            ZoneInfo(time_zone),
        )
    )


def bucket_end(instant: datetime, granularity: Granularity, time_zone: str) -> datetime:
    """Where the bucket holding an instant ends."""
    return bucket_containing(instant, granularity, ZoneInfo(time_zone)).end
