"""An independent reference of the bucketing rule, which the domain's bucketing and the service's
buckets are held to: the local clock that zoneinfo gives, read minute by minute and grouped into
longest stretches of one calendar quarter hour, half hour or hour (each also of one UTC offset)
or of one calendar day.

It shares no code with timeseries_aggregation.domain on purpose: where the two disagree, one of
them is wrong. Reading whole minutes holds where every UTC offset is a whole number of minutes
and changes on a whole minute, which it checks as it reads.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import zoneinfo
from datetime import UTC, datetime, timedelta

from timeseries_aggregation.domain.time_zones import READ_AS_FIXED_ABBREVIATIONS
from timeseries_aggregation.granularities import Granularity

# Every zone the service buckets by: the IANA names proper, less those PostgreSQL would read as
# fixed-offset abbreviations.
ACCEPTED_ZONES = sorted(
    zoneinfo.available_timezones() - {"localtime", "Factory"} - READ_AS_FIXED_ABBREVIATIONS
)

# Clock changes of a kind the current year lacks: at 00:01 (St. John's and Goose Bay, until
# 2011), by an hour in a zone of half-hour offsets (Lord Howe, 1981-1984), into a quarter-hour
# offset at midnight (Kathmandu), Chatham's 02:45 under its rules of 2000, a skipped day (Apia,
# Kiritimati), three hours back (Casey), half an hour (Caracas, Pyongyang), back from 24:00
# (Tehran).
HISTORICAL_YEARS = (
    ("America/St_Johns", 2000),
    ("America/Goose_Bay", 2000),
    ("Australia/Lord_Howe", 1983),
    ("Asia/Kathmandu", 1986),
    ("Pacific/Chatham", 2000),
    ("Pacific/Apia", 2011),
    ("Pacific/Kiritimati", 1994),
    ("Antarctica/Casey", 2010),
    ("America/Caracas", 2007),
    ("Asia/Pyongyang", 2015),
    ("Asia/Tehran", 2022),
)

# The granularities the reference knows, by the length of their calendar unit in minutes.
UNIT_MINUTES = {
    Granularity.QUARTER_HOURLY: 15,
    Granularity.HALF_HOURLY: 30,
    Granularity.HOURLY: 60,
    Granularity.DAY_OF_MONTH: 1_440,
}
_DAY = 1_440
# A zone's offset is probed this often to find its changes: no offset has lasted less.
_PROBE = timedelta(hours=6)
# A date lasts a day and the clocks' longest jump back (three hours at Casey in 2010): three
# days are plenty.
_LONGEST_DAY = 3 * _DAY
_EPOCH = datetime(1970, 1, 1)
_UTC_EPOCH = _EPOCH.replace(tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_ONE_MINUTE = timedelta(minutes=1)
_WINDOW_REACH = timedelta(hours=4)
_READING_STEP = timedelta(minutes=5)


@dataclasses.dataclass(frozen=True, slots=True)
class Stretch:
    """A bucket: a longest stretch [start, end) of time in one clock unit, and its label."""

    start: datetime
    end: datetime
    label: str


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """A span of a zone [start, end) (whole minutes, UTC) to bucket: four hours either side of
    a clock change, or of a local midnight in a year without one."""

    zone_name: str
    start: datetime
    end: datetime
    change: datetime | None

    def reading_times(self) -> list[datetime]:
        """Where readings go: every five minutes, and a microsecond before the clock change."""
        times = [
            self.start + step * _READING_STEP for step in range((self.end - self.start) // _READING_STEP)
        ]
        if self.change is not None:
            times.append(self.change - timedelta(microseconds=1))
        return sorted(times)


def _offset_seconds(zone: zoneinfo.ZoneInfo, second: int) -> int:
    offset = datetime.fromtimestamp(second, zone).utcoffset()
    assert offset is not None
    return offset // _ONE_SECOND


def _whole_minutes(offset: timedelta | None) -> int:
    assert offset is not None
    minutes, rest = divmod(offset, _ONE_MINUTE)
    assert not rest, f"an offset of {offset} is not whole minutes"
    return int(minutes)


@functools.cache
def clock_changes(zone_name: str, year: int) -> tuple[datetime, ...]:
    """The instants of a year (UTC) at which the zone's UTC offset changes: probed every six
    hours, each change narrowed to the second."""
    zone = zoneinfo.ZoneInfo(zone_name)
    changes: list[datetime] = []
    probe = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    step = int(_PROBE.total_seconds())
    offset = _offset_seconds(zone, probe)
    while probe < end:
        following = min(probe + step, end)
        if _offset_seconds(zone, following) != offset:
            unchanged, changed = probe, following
            while changed - unchanged > 1:
                middle = (unchanged + changed) // 2
                if _offset_seconds(zone, middle) == offset:
                    unchanged = middle
                else:
                    changed = middle
            changes.append(datetime.fromtimestamp(changed, UTC))
            offset = _offset_seconds(zone, changed)
            # Another change within the same six hours would have gone unseen.
            assert _offset_seconds(zone, following) == offset, (zone_name, changes[-1])
        probe = following
    return tuple(changes)


def windows(zone_name: str, year: int) -> list[Window]:
    """Four hours either side of each of the year's clock changes, or of local midnight
    starting 1 July when the clocks did not change."""
    changes = clock_changes(zone_name, year)
    if changes:
        found = [
            Window(zone_name, change - _WINDOW_REACH, change + _WINDOW_REACH, change) for change in changes
        ]
    else:
        midnight = datetime(year, 7, 1, tzinfo=zoneinfo.ZoneInfo(zone_name)).astimezone(UTC)
        found = [Window(zone_name, midnight - _WINDOW_REACH, midnight + _WINDOW_REACH, None)]
    for earlier, later in itertools.pairwise(found):
        assert earlier.end <= later.start, (earlier, later)
    return found


class _LocalClock:
    """What a zone's clock shows in each minute since the epoch (UTC), from zoneinfo."""

    def __init__(self, zone_name: str) -> None:
        self._zone = zoneinfo.ZoneInfo(zone_name)

    def offsets(self, first: int, end: int) -> list[int]:
        """The UTC offset, in minutes, of each minute from first to end (excluded)."""
        zone = self._zone
        found = [datetime.fromtimestamp(minute * 60, zone).utcoffset() for minute in range(first - 1, end)]
        for minute, (before, after) in enumerate(itertools.pairwise(found), first):
            # The offset changed on the minute: the second before it still had the old one.
            changed_late = (
                before != after and datetime.fromtimestamp(minute * 60 - 1, zone).utcoffset() != before
            )
            assert not changed_late, (zone, minute)
        minutes = {offset: _whole_minutes(offset) for offset in set(found)}
        return [minutes[offset] for offset in found[1:]]

    def day_start(self, minute: int) -> int:
        """The first minute of the stretch of one date holding a minute: after the last minute
        whose clock showed another date."""
        day = (minute + self.offsets(minute, minute + 1)[0]) // _DAY
        start = minute
        while minute - start < _LONGEST_DAY:
            for offset in reversed(self.offsets(start - 60, start)):
                if (start - 1 + offset) // _DAY != day:
                    return start
                start -= 1
        raise AssertionError(f"{self._zone} shows one date for days before minute {minute}")

    def day_end(self, minute: int) -> int:
        """The minute after the stretch of one date holding a minute: the first whose clock
        shows another date."""
        day = (minute + self.offsets(minute, minute + 1)[0]) // _DAY
        end = minute + 1
        while end - minute < _LONGEST_DAY:
            for offset in self.offsets(end, end + 60):
                if (end + offset) // _DAY != day:
                    return end
                end += 1
        raise AssertionError(f"{self._zone} shows one date for days after minute {minute}")


def _minute(instant: datetime) -> int:
    minutes, rest = divmod(instant - _UTC_EPOCH, _ONE_MINUTE)
    assert not rest, f"{instant} is not a whole minute"
    return int(minutes)


def _instant(minute: int) -> datetime:
    return _UTC_EPOCH + minute * _ONE_MINUTE


def _stretch(start: int, end: int, local_unit: int, unit_minutes: int) -> Stretch:
    """The stretch of minutes [start, end) in which the clock shows one unit, labelled by the
    unit's local start."""
    local_start = _EPOCH + local_unit * unit_minutes * _ONE_MINUTE
    label = f"{local_start:%Y-%m-%d}" if unit_minutes == _DAY else f"{local_start:%Y-%m-%dT%H:%M}"
    return Stretch(_instant(start), _instant(end), label)


@functools.cache
def reference_buckets(
    zone_name: str, start: datetime, end: datetime
) -> dict[Granularity, tuple[Stretch, ...]]:
    """For each granularity of the reference, every bucket holding an instant of [start, end)
    (whole minutes), in time order."""
    clock = _LocalClock(zone_name)
    first, end_minute = _minute(start), _minute(end)
    # The date changes wherever the hour does, so every stretch asked for lies within the days
    # of [start, end); a stretch of a part of a day, at most an hour long, lies within an hour
    # of [start, end) too.
    low, high = clock.day_start(first), clock.day_end(end_minute - 1)
    read_start, read_end = max(low, first - 60), min(high, end_minute + 60)
    offsets = clock.offsets(read_start, read_end)
    found: dict[Granularity, tuple[Stretch, ...]] = {}
    for granularity, unit_minutes in UNIT_MINUTES.items():
        # What the clock shows as far as the unit looks: the calendar unit, and for a part of a
        # day the UTC offset.
        shown = [
            ((minute + offset) // unit_minutes, offset if unit_minutes < _DAY else 0)
            for minute, offset in enumerate(offsets, read_start)
        ]
        bounds = [
            read_start,
            *(read_start + index for index in range(1, len(shown)) if shown[index] != shown[index - 1]),
            read_end,
        ]
        stretches = [
            _stretch(stretch_start, stretch_end, shown[stretch_start - read_start][0], unit_minutes)
            for stretch_start, stretch_end in itertools.pairwise(bounds)
            if stretch_end > first and stretch_start < end_minute
        ]
        if unit_minutes == _DAY:
            # The first and last dates go on to the bounds of their days.
            stretches[0] = dataclasses.replace(stretches[0], start=_instant(low))
            stretches[-1] = dataclasses.replace(stretches[-1], end=_instant(high))
        else:
            # Where the minutes read stop short of the days, a stretch they cut would be longer
            # than an hour.
            assert read_start == low or stretches[0].start > _instant(read_start), (zone_name, start)
            assert read_end == high or stretches[-1].end < _instant(read_end), (zone_name, end)
        found[granularity] = tuple(stretches)
    return found


def stretch_holding(stretches: tuple[Stretch, ...], instant: datetime) -> Stretch:
    """The stretch of a time-ordered, gapless tuple that holds an instant."""
    index = bisect.bisect_right([stretch.start for stretch in stretches], instant) - 1
    assert index >= 0, (instant, stretches)
    assert instant < stretches[index].end, (instant, stretches)
    return stretches[index]
