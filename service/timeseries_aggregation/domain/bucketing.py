"""Where a bucket starts and ends in a time zone, and its label: the rule the SQL is held to.

A bucket is a longest stretch of time during which the local clock stays in one calendar
quarter hour, half hour, hour, day, ISO week (from Monday), month, quarter or year. An hour (and
a quarter or half of one) is also one UTC offset: the two 02:00 hours of a night when the
clocks go back are two buckets with one label. A day, week, month, quarter or year is one
bucket however long the clocks make it (23- and 25-hour days). Where the clocks jump into or
out of the middle of an hour, its bucket is shorter (the 02:00 hour of a spring night on the
Chatham Islands lasts 45 minutes), and where they go back across a boundary, a label can
occur twice (St. John's set its clocks back from 00:01 to 23:01 until 2011: a one-minute day,
then an hour of the day before).
"""

import bisect
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from timeseries_aggregation.domain.zone_offsets import offset_changes, utc_offset
from timeseries_aggregation.granularities import GRANULARITY_INFO, Granularity, GranularityInfo

# Offsets are looked up a year at a time, with this much on either side: more than any
# bucket holding an instant of the year (a year at most) reaches beyond it.
_YEAR_MARGIN = timedelta(days=370)
# The real time N buckets span is at most N of their longest local length (a 25-hour day is a
# 24-hour local day) plus how far the zone's offset moved back meanwhile, which is at most the
# width of all offsets, from UTC-12 to UTC+14, however many buckets and clock changes.
_OFFSET_WIDTH = timedelta(hours=26)
_DISTANT_PAST = datetime.min.replace(tzinfo=UTC)
_DISTANT_FUTURE = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BucketSpan:
    """One bucket: the half-open stretch [start, end) of UTC time it covers, and its label."""

    start: datetime
    end: datetime
    period: str


@dataclass(frozen=True, slots=True)
class _OffsetPeriods:
    """The UTC offsets of a zone around one year: offsets[i] is in force from starts[i] to ends[i]."""

    starts: tuple[datetime, ...]
    ends: tuple[datetime, ...]
    offsets: tuple[timedelta, ...]


def bucket_reach(granularity: Granularity, buckets: int) -> timedelta:
    """An upper bound of the time from a bucket's start to the last reading of the bucket
    `buckets - 1` places after it, in every zone."""
    return buckets * GRANULARITY_INFO[granularity].longest + _OFFSET_WIDTH


def bucket_containing(instant: datetime, granularity: Granularity, zone: ZoneInfo) -> BucketSpan:
    """The bucket of the given granularity in the zone that holds an aware instant."""
    utc = instant.astimezone(UTC)
    periods = _offset_periods(zone, utc.year)
    index = bisect.bisect_right(periods.starts, utc) - 1
    offset = periods.offsets[index]
    info = GRANULARITY_INFO[granularity]
    unit_start = _unit_start(utc.replace(tzinfo=None) + offset, info)
    unit_end = _unit_end(unit_start, info)
    if info.clock:
        start = max(_instant(unit_start, offset), periods.starts[index])
        end = min(_instant(unit_end, offset), periods.ends[index])
    else:
        start = _calendar_start(periods, index, unit_start, unit_end)
        end = _calendar_end(periods, index, unit_start, unit_end)
    return BucketSpan(start, end, info.label(unit_start))


def _unit_start(local: datetime, info: GranularityInfo) -> datetime:
    """The start of the calendar unit (quarter hour to year) that holds a naive local time."""
    if info.step_unit == "minutes":
        return local.replace(minute=local.minute - local.minute % info.step, second=0, microsecond=0)
    hour = local.replace(minute=0, second=0, microsecond=0)
    if info.step_unit == "hours":
        return hour
    day = hour.replace(hour=0)
    if info.step_unit == "days":
        return day
    if info.step_unit == "weeks":
        return day - timedelta(days=day.weekday())
    # Months, quarters and years: whole groups of `step` months counted from January.
    return day.replace(month=day.month - (day.month - 1) % info.step, day=1)


def _unit_end(unit_start: datetime, info: GranularityInfo) -> datetime:
    """The start of the calendar unit after the one starting at unit_start."""
    if info.step_unit != "months":
        return unit_start + timedelta(**{info.step_unit: info.step})
    month_index = unit_start.month - 1 + info.step
    return unit_start.replace(year=unit_start.year + month_index // 12, month=month_index % 12 + 1)


def _instant(local: datetime, offset: timedelta) -> datetime:
    """The instant at which a clock running at this UTC offset shows the naive local time."""
    return (local - offset).replace(tzinfo=UTC)


def _calendar_start(
    periods: _OffsetPeriods, index: int, unit_start: datetime, unit_end: datetime
) -> datetime:
    """Where the clock entered [unit_start, unit_end) for the stretch that includes period index."""
    while True:
        candidate = _instant(unit_start, periods.offsets[index])
        period_start = periods.starts[index]
        if candidate > period_start:
            return candidate
        # The clock already showed the unit when this offset began: the stretch goes on
        # backwards if the clock showed the unit just before too (it went back within it).
        shown_before = period_start.replace(tzinfo=None) + periods.offsets[index - 1]
        if not unit_start < shown_before <= unit_end:
            return period_start
        index -= 1


def _calendar_end(periods: _OffsetPeriods, index: int, unit_start: datetime, unit_end: datetime) -> datetime:
    """Where the clock left [unit_start, unit_end) for the stretch that includes period index."""
    while True:
        candidate = _instant(unit_end, periods.offsets[index])
        period_end = periods.ends[index]
        if candidate < period_end:
            return candidate
        # The clock still showed the unit when this offset ended: the stretch goes on if
        # the next offset keeps the clock in the unit (it went back, e.g. from 24:00 to 23:00).
        shown_after = period_end.replace(tzinfo=None) + periods.offsets[index + 1]
        if not unit_start <= shown_after < unit_end:
            return period_end
        index += 1


@functools.cache
def _offset_periods(zone: ZoneInfo, year: int) -> _OffsetPeriods:
    """The zone's UTC offsets and the instants they change at, from zoneinfo, around a year.

    The first and last periods reach into the distant past and future: nothing asked
    about the year depends on where they really begin or end.
    """
    first = datetime(year, 1, 1, tzinfo=UTC) - _YEAR_MARGIN
    changes = offset_changes(zone, first, datetime(year + 1, 1, 1, tzinfo=UTC) + _YEAR_MARGIN)
    starts = (_DISTANT_PAST, *(change.instant for change in changes))
    offsets = (utc_offset(zone, first), *(change.offset for change in changes))
    return _OffsetPeriods(starts, (*starts[1:], _DISTANT_FUTURE), offsets)


def buckets_between(
    start: datetime, end: datetime, granularity: Granularity, zone: ZoneInfo
) -> Iterator[BucketSpan]:
    """Every bucket holding an instant of [start, end), in time order."""
    instant = start
    while instant < end:
        span = bucket_containing(instant, granularity, zone)
        yield span
        instant = span.end
