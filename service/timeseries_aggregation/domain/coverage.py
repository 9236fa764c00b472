"""How many readings a bucket should hold, from the reading intervals its series declare.

A series reporting every `interval` seconds has a slot at each instant k x interval after
1970-01-01T00:00:00Z; a bucket expects one reading per slot of each such series inside it and
inside the query's range. Counted on the real time line, a 23-hour day expects 92 quarter
hours and a 25-hour one 100.
"""

from collections.abc import Sequence

_MICROS_PER_SECOND = 1_000_000

# (declared interval in seconds, how many series of a group declare it)
IntervalCount = tuple[int, int]


def slots(start_micros: int, end_micros: int, interval_seconds: int) -> int:
    """The instants k x interval after the epoch in [start, end)."""
    if end_micros <= start_micros:
        return 0
    step = interval_seconds * _MICROS_PER_SECOND
    return -(-end_micros // step) - -(-start_micros // step)


def expected_reading_count(
    bucket_start_seconds: int,
    bucket_end_seconds: int,
    range_start_micros: int,
    range_end_micros: int,
    intervals: Sequence[IntervalCount],
) -> int:
    """The readings a bucket expects from series declaring these intervals, within the range."""
    start = max(bucket_start_seconds * _MICROS_PER_SECOND, range_start_micros)
    end = min(bucket_end_seconds * _MICROS_PER_SECOND, range_end_micros)
    return sum(series * slots(start, end, interval) for interval, series in intervals)
