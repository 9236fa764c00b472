"""Where a time zone's UTC offset changes: the one finder the bucketing, the query's plan and
the tests use."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# The one assumption: no UTC offset of the tz database lasts less than this (since 1970 none has
# lasted less than six days), so a probe of the zone at every step finds every change, and
# never two between neighbouring probes.
SHORTEST_OFFSET_PERIOD = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class OffsetChange:
    """The instant (UTC, whole seconds, as the tz database records it) at which a zone's UTC
    offset becomes `offset`."""

    instant: datetime
    offset: timedelta


def utc_offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    """The zone's UTC offset at an aware instant."""
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[OffsetChange]:
    """The changes of the zone's UTC offset in (start, end], in time order: zoneinfo probed
    every SHORTEST_OFFSET_PERIOD, and each change bisected to the second."""
    changes: list[OffsetChange] = []
    probe = start
    previous = utc_offset(zone, probe)
    while probe < end:
        following = min(probe + SHORTEST_OFFSET_PERIOD, end)
        offset = utc_offset(zone, following)
        if offset != previous:
            changes.append(OffsetChange(_change_instant(zone, probe, following, previous), offset))
            previous = offset
        probe = following
    return changes


def _change_instant(zone: ZoneInfo, before: datetime, after: datetime, old_offset: timedelta) -> datetime:
    """The first whole second after `before` at which the offset is no longer old_offset; the
    one change lies in (before, after]."""
    low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if utc_offset(zone, datetime.fromtimestamp(middle, UTC)) == old_offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)
