"""The bucketing rule: where buckets start and end in a time zone, and their labels."""

from __future__ import annotations

import itertools
import zoneinfo
from collections import Counter
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import offset_changes_near
from tests.zone_reference import (
    ACCEPTED_ZONES,
    HISTORICAL_YEARS,
    Stretch,
    reference_buckets,
    stretch_holding,
    windows,
)
from timeseries_aggregation.domain.bucketing import (
    BucketSpan,
    bucket_containing,
    bucket_reach,
    buckets_between,
)
from timeseries_aggregation.domain.readings import EARLIEST_TIME, LATEST_TIME
from timeseries_aggregation.granularities import Granularity

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

ONE_MICROSECOND = timedelta(microseconds=1)
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
ALL_ZONES = sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})


def utc(text: str) -> datetime:
    """An aware UTC datetime from an ISO string without offset."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def clock_unit(instant: datetime, granularity: Granularity, zone: zoneinfo.ZoneInfo) -> Hashable:
    """What the local clock shows at an instant, as far as the granularity looks: the hour
    with its UTC offset, the date, or the month. A bucket is a stretch where it stays the same."""
    local = instant.astimezone(zone)
    if granularity is Granularity.QUARTER_HOURLY:
        return local.strftime("%Y-%m-%dT%H"), local.minute // 15, local.utcoffset()
    if granularity is Granularity.HALF_HOURLY:
        return local.strftime("%Y-%m-%dT%H"), local.minute // 30, local.utcoffset()
    if granularity is Granularity.HOURLY:
        return local.strftime("%Y-%m-%dT%H"), local.utcoffset()
    if granularity is Granularity.DAY_OF_MONTH:
        return local.date()
    if granularity is Granularity.WEEKLY:
        return local.isocalendar()[:2]
    if granularity is Granularity.QUARTERLY:
        return local.year, (local.month - 1) // 3
    if granularity is Granularity.YEARLY:
        return local.year
    return local.year, local.month


def label(instant: datetime, granularity: Granularity, zone: zoneinfo.ZoneInfo) -> str:
    """The period label of the local clock's hour, day or month at an instant."""
    local = instant.astimezone(zone)
    patterns = {
        Granularity.QUARTER_HOURLY: f"%Y-%m-%dT%H:{local.minute // 15 * 15:02}",
        Granularity.HALF_HOURLY: f"%Y-%m-%dT%H:{local.minute // 30 * 30:02}",
        Granularity.HOURLY: "%Y-%m-%dT%H:00",
        Granularity.DAY_OF_MONTH: "%Y-%m-%d",
        Granularity.WEEKLY: f"{local.isocalendar().year:04}-W{local.isocalendar().week:02}",
        Granularity.MONTHLY: "%Y-%m",
        Granularity.QUARTERLY: f"%Y-Q{(local.month - 1) // 3 + 1}",
        Granularity.YEARLY: "%Y",
    }
    return local.strftime(patterns[granularity])


def spans(
    first: datetime, end: datetime, granularity: Granularity, zone: zoneinfo.ZoneInfo
) -> list[BucketSpan]:
    """The buckets from the one holding first up to end, each starting where the last ended."""
    found: list[BucketSpan] = []
    instant = first
    while instant < end:
        found.append(bucket_containing(instant, granularity, zone))
        instant = found[-1].end
    return found


def local_spans(
    first: str, count: int, granularity: Granularity, zone_name: str
) -> list[tuple[str, str, str]]:
    """`count` consecutive buckets from the one holding a UTC instant: local start, local end, label."""
    zone = zoneinfo.ZoneInfo(zone_name)
    found: list[tuple[str, str, str]] = []
    instant = utc(first)
    for _ in range(count):
        span = bucket_containing(instant, granularity, zone)
        found.append(
            (span.start.astimezone(zone).isoformat(), span.end.astimezone(zone).isoformat(), span.period)
        )
        instant = span.end
    return found


class TestWholeHourZoneWithDaylightSaving:
    def test_the_two_0200_hours_of_an_autumn_night_are_two_buckets_with_one_label(self) -> None:
        assert local_spans("2025-10-25T23:00", 4, Granularity.HOURLY, "Europe/Berlin") == [
            ("2025-10-26T01:00:00+02:00", "2025-10-26T02:00:00+02:00", "2025-10-26T01:00"),
            ("2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00", "2025-10-26T02:00"),
            ("2025-10-26T02:00:00+01:00", "2025-10-26T03:00:00+01:00", "2025-10-26T02:00"),
            ("2025-10-26T03:00:00+01:00", "2025-10-26T04:00:00+01:00", "2025-10-26T03:00"),
        ]

    def test_a_spring_night_has_no_0200_hour(self) -> None:
        assert local_spans("2025-03-30T00:00", 2, Granularity.HOURLY, "Europe/Berlin") == [
            ("2025-03-30T01:00:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-30T01:00"),
            ("2025-03-30T03:00:00+02:00", "2025-03-30T04:00:00+02:00", "2025-03-30T03:00"),
        ]

    def test_days_last_23_or_25_hours_when_the_clocks_change(self) -> None:
        spring = bucket_containing(utc("2025-03-30T12:00"), Granularity.DAY_OF_MONTH, BERLIN)
        autumn = bucket_containing(utc("2025-10-26T12:00"), Granularity.DAY_OF_MONTH, BERLIN)

        assert spring == BucketSpan(utc("2025-03-29T23:00"), utc("2025-03-30T22:00"), "2025-03-30")
        assert autumn == BucketSpan(utc("2025-10-25T22:00"), utc("2025-10-26T23:00"), "2025-10-26")
        assert (spring.end - spring.start, autumn.end - autumn.start) == (
            timedelta(hours=23),
            timedelta(hours=25),
        )

    def test_a_month_with_a_clock_change_is_one_hour_short(self) -> None:
        march = bucket_containing(utc("2025-03-15T00:00"), Granularity.MONTHLY, BERLIN)

        assert march == BucketSpan(utc("2025-02-28T23:00"), utc("2025-03-31T22:00"), "2025-03")
        assert march.end - march.start == timedelta(days=31, hours=-1)

    def test_a_year_of_hours_has_every_label_once_but_the_two_changes(self) -> None:
        year = spans(utc("2024-12-31T23:00"), utc("2025-12-31T23:00"), Granularity.HOURLY, BERLIN)

        labels = Counter(span.period for span in year)
        assert len(year) == 8_760
        assert {period: count for period, count in labels.items() if count != 1} == {"2025-10-26T02:00": 2}
        assert "2025-03-30T02:00" not in labels
        assert {span.end - span.start for span in year} == {timedelta(hours=1)}

    def test_a_year_of_days_has_one_23_and_one_25_hour_day(self) -> None:
        year = spans(utc("2024-12-31T23:00"), utc("2025-12-31T23:00"), Granularity.DAY_OF_MONTH, BERLIN)

        lengths = Counter(span.end - span.start for span in year)
        assert lengths == {timedelta(hours=24): 363, timedelta(hours=23): 1, timedelta(hours=25): 1}
        assert len({span.period for span in year}) == 365


class TestOddOffsets:
    def test_half_hour_zone_hours_start_at_half_past_utc(self) -> None:
        assert local_spans("2025-06-01T00:10", 2, Granularity.HOURLY, "Asia/Kolkata") == [
            ("2025-06-01T05:00:00+05:30", "2025-06-01T06:00:00+05:30", "2025-06-01T05:00"),
            ("2025-06-01T06:00:00+05:30", "2025-06-01T07:00:00+05:30", "2025-06-01T06:00"),
        ]
        assert bucket_containing(
            utc("2025-06-01T00:10"), Granularity.HOURLY, zoneinfo.ZoneInfo("Asia/Kolkata")
        ).start == utc("2025-05-31T23:30")

    def test_a_zone_moving_by_a_quarter_hour_makes_a_45_minute_hour(self) -> None:
        # Nepal went from +05:30 to +05:45 at midnight of 1986: the clock jumped to 00:15.
        assert local_spans("1985-12-31T18:00", 2, Granularity.HOURLY, "Asia/Kathmandu") == [
            ("1985-12-31T23:00:00+05:30", "1986-01-01T00:15:00+05:45", "1985-12-31T23:00"),
            ("1986-01-01T00:15:00+05:45", "1986-01-01T01:00:00+05:45", "1986-01-01T00:00"),
        ]

    def test_a_clock_change_at_a_quarter_to_the_hour_cuts_two_hours(self) -> None:
        # The Chatham Islands (+12:45) go from 02:45 to 03:45 in spring and back in autumn.
        assert local_spans("2025-09-27T13:15", 3, Granularity.HOURLY, "Pacific/Chatham") == [
            ("2025-09-28T02:00:00+12:45", "2025-09-28T03:45:00+13:45", "2025-09-28T02:00"),
            ("2025-09-28T03:45:00+13:45", "2025-09-28T04:00:00+13:45", "2025-09-28T03:00"),
            ("2025-09-28T04:00:00+13:45", "2025-09-28T05:00:00+13:45", "2025-09-28T04:00"),
        ]
        assert local_spans("2025-04-05T13:15", 3, Granularity.HOURLY, "Pacific/Chatham") == [
            ("2025-04-06T03:00:00+13:45", "2025-04-06T02:45:00+12:45", "2025-04-06T03:00"),
            ("2025-04-06T02:45:00+12:45", "2025-04-06T03:00:00+12:45", "2025-04-06T02:00"),
            ("2025-04-06T03:00:00+12:45", "2025-04-06T04:00:00+12:45", "2025-04-06T03:00"),
        ]

    def test_a_half_hour_clock_change_repeats_half_an_hour(self) -> None:
        # Lord Howe Island goes back from 02:00 (+11) to 01:30 (+10:30).
        assert local_spans("2025-04-05T14:00", 3, Granularity.HOURLY, "Australia/Lord_Howe") == [
            ("2025-04-06T01:00:00+11:00", "2025-04-06T01:30:00+10:30", "2025-04-06T01:00"),
            ("2025-04-06T01:30:00+10:30", "2025-04-06T02:00:00+10:30", "2025-04-06T01:00"),
            ("2025-04-06T02:00:00+10:30", "2025-04-06T03:00:00+10:30", "2025-04-06T02:00"),
        ]


class TestClockChangesAtMidnight:
    def test_a_day_starts_at_its_first_midnight_when_midnight_repeats(self) -> None:
        # Cuba goes back from 01:00 to 00:00: midnight happens twice on that day.
        assert local_spans("2025-11-01T12:00", 2, Granularity.DAY_OF_MONTH, "America/Havana") == [
            ("2025-11-01T00:00:00-04:00", "2025-11-02T00:00:00-04:00", "2025-11-01"),
            ("2025-11-02T00:00:00-04:00", "2025-11-03T00:00:00-05:00", "2025-11-02"),
        ]

    def test_a_day_without_midnight_starts_when_the_clocks_jump(self) -> None:
        # Chile goes forward from 00:00 to 01:00.
        assert local_spans("2024-09-07T12:00", 2, Granularity.DAY_OF_MONTH, "America/Santiago") == [
            ("2024-09-07T00:00:00-04:00", "2024-09-08T01:00:00-03:00", "2024-09-07"),
            ("2024-09-08T01:00:00-03:00", "2024-09-09T00:00:00-03:00", "2024-09-08"),
        ]

    def test_a_month_ends_at_the_second_midnight_when_the_clocks_go_back_from_2400(self) -> None:
        # Egypt went back from 24:00 on 31 October to 23:00.
        assert local_spans("2024-10-15T00:00", 2, Granularity.MONTHLY, "Africa/Cairo") == [
            ("2024-10-01T00:00:00+03:00", "2024-11-01T00:00:00+02:00", "2024-10"),
            ("2024-11-01T00:00:00+02:00", "2024-12-01T00:00:00+02:00", "2024-11"),
        ]

    def test_a_skipped_day_has_no_bucket(self) -> None:
        # Samoa crossed the date line: 29 December 2011 was followed by 31 December.
        assert local_spans("2011-12-29T00:00", 3, Granularity.DAY_OF_MONTH, "Pacific/Apia") == [
            ("2011-12-28T00:00:00-10:00", "2011-12-29T00:00:00-10:00", "2011-12-28"),
            ("2011-12-29T00:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-29"),
            ("2011-12-31T00:00:00+14:00", "2012-01-01T00:00:00+14:00", "2011-12-31"),
        ]

    def test_clocks_going_back_across_midnight_make_a_label_occur_twice(self) -> None:
        # St. John's went back from 00:01 to 23:01 until 2011: the new day lasted a minute,
        # then the clock showed the day before for another 59 minutes.
        assert local_spans("2000-10-28T12:00", 4, Granularity.DAY_OF_MONTH, "America/St_Johns") == [
            ("2000-10-28T00:00:00-02:30", "2000-10-29T00:00:00-02:30", "2000-10-28"),
            ("2000-10-29T00:00:00-02:30", "2000-10-28T23:01:00-03:30", "2000-10-29"),
            ("2000-10-28T23:01:00-03:30", "2000-10-29T00:00:00-03:30", "2000-10-28"),
            ("2000-10-29T00:00:00-03:30", "2000-10-30T00:00:00-03:30", "2000-10-29"),
        ]


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2024-02-10T00:00", BucketSpan(utc("2024-02-01T00:00"), utc("2024-03-01T00:00"), "2024-02")),
        (
            "2023-12-31T23:59:59.999999",
            BucketSpan(utc("2023-12-01T00:00"), utc("2024-01-01T00:00"), "2023-12"),
        ),
        ("2024-01-01T00:00", BucketSpan(utc("2024-01-01T00:00"), utc("2024-02-01T00:00"), "2024-01")),
    ],
)
def test_utc_months_run_from_the_first_to_the_first(instant: str, expected: BucketSpan) -> None:
    assert bucket_containing(utc(instant), Granularity.MONTHLY, zoneinfo.ZoneInfo("UTC")) == expected


def test_the_instant_may_be_given_in_any_zone() -> None:
    instant = datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=BERLIN)

    assert bucket_containing(instant, Granularity.HOURLY, BERLIN) == BucketSpan(
        utc("2025-10-26T01:00"), utc("2025-10-26T02:00"), "2025-10-26T02:00"
    )


# Zones whose clocks change at odd times or by odd amounts, drawn as often as all others.
AWKWARD_ZONES = [
    "Europe/Berlin",
    "America/St_Johns",
    "America/Goose_Bay",
    "America/Havana",
    "America/Santiago",
    "America/Caracas",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Africa/Cairo",
    "Antarctica/Casey",
]
AROUND_A_CHANGE = [
    timedelta(minutes=15 * quarter) + nudge
    for quarter in range(-9, 10)
    for nudge in (timedelta(0), -ONE_MICROSECOND, timedelta(seconds=1))
]


@st.composite
def instants_in_a_zone(draw: st.DrawFn) -> tuple[zoneinfo.ZoneInfo, list[datetime]]:
    """A zone and instants of the supported range to bucket in it: a random one, and the
    quarter hours (and a microsecond before, a second after) around a nearby clock change."""
    zone = zoneinfo.ZoneInfo(draw(st.one_of(st.sampled_from(AWKWARD_ZONES), st.sampled_from(ALL_ZONES))))
    instant = draw(
        st.datetimes(min_value=datetime(1970, 2, 1), max_value=datetime(2099, 12, 1), timezones=st.just(UTC))
    )
    changes = offset_changes_near(instant, zone)
    if not changes:
        return zone, [instant]
    change = draw(st.sampled_from(changes))
    return zone, [instant, *(change + offset for offset in AROUND_A_CHANGE)]


@given(instants=instants_in_a_zone())
def test_a_bucket_holds_its_instant_and_is_a_longest_stretch_of_one_clock_unit(
    instants: tuple[zoneinfo.ZoneInfo, list[datetime]],
) -> None:
    zone, moments = instants
    for granularity in Granularity:
        for instant in moments:
            span = bucket_containing(instant, granularity, zone)

            assert span.start <= instant < span.end
            unit = clock_unit(instant, granularity, zone)
            assert clock_unit(span.start, granularity, zone) == unit
            assert clock_unit(span.end - ONE_MICROSECOND, granularity, zone) == unit
            assert clock_unit(span.start - ONE_MICROSECOND, granularity, zone) != unit
            assert clock_unit(span.end, granularity, zone) != unit
            assert span.period == label(instant, granularity, zone)
            assert span.start.tzinfo is UTC
            assert span.end.tzinfo is UTC


@given(instants=instants_in_a_zone(), position=st.integers(min_value=0))
def test_every_instant_of_a_bucket_has_that_bucket(
    instants: tuple[zoneinfo.ZoneInfo, list[datetime]], position: int
) -> None:
    zone, moments = instants
    for granularity in Granularity:
        for instant in moments:
            span = bucket_containing(instant, granularity, zone)
            inside = span.start + timedelta(
                microseconds=position % ((span.end - span.start) // ONE_MICROSECOND)
            )

            assert bucket_containing(inside, granularity, zone) == span
            assert bucket_containing(span.start, granularity, zone) == span
            assert bucket_containing(span.end - ONE_MICROSECOND, granularity, zone) == span


@given(instants=instants_in_a_zone())
def test_buckets_tile_time_without_gaps_or_overlaps(
    instants: tuple[zoneinfo.ZoneInfo, list[datetime]],
) -> None:
    zone, moments = instants
    for granularity in Granularity:
        for instant in moments:
            span = bucket_containing(instant, granularity, zone)

            assert bucket_containing(span.end, granularity, zone).start == span.end
            assert bucket_containing(span.start - ONE_MICROSECOND, granularity, zone).end == span.start


@given(instants=instants_in_a_zone())
def test_bucket_bounds_are_whole_seconds_no_longer_than_the_clock_unit(
    instants: tuple[zoneinfo.ZoneInfo, list[datetime]],
) -> None:
    zone, moments = instants
    # Clocks jump by at most a day (Samoa skipping 30 December 2011).
    longest = {
        Granularity.QUARTER_HOURLY: timedelta(minutes=15),
        Granularity.HALF_HOURLY: timedelta(minutes=30),
        Granularity.HOURLY: timedelta(hours=1),
        Granularity.DAY_OF_MONTH: timedelta(days=2),
        Granularity.WEEKLY: timedelta(days=8),
        Granularity.MONTHLY: timedelta(days=32),
        Granularity.QUARTERLY: timedelta(days=93),
        Granularity.YEARLY: timedelta(days=367),
    }
    for granularity in Granularity:
        for instant in moments:
            span = bucket_containing(instant, granularity, zone)

            assert span.start.microsecond == span.end.microsecond == 0
            assert span.end - span.start <= longest[granularity]


@pytest.mark.parametrize("edge", [EARLIEST_TIME, LATEST_TIME - ONE_MICROSECOND])
@pytest.mark.parametrize("granularity", list(Granularity))
def test_buckets_at_the_edges_of_the_supported_range(edge: datetime, granularity: Granularity) -> None:
    for zone_name in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "America/St_Johns"):
        zone = zoneinfo.ZoneInfo(zone_name)
        span = bucket_containing(edge, granularity, zone)

        assert span.start <= edge < span.end
        assert span.period == label(edge, granularity, zone)


# Clock changes of every kind: Casey's three hours back (2010), Samoa's skipped day (2011),
# Lord Howe's half hour, Kathmandu's quarter-hour offset, Berlin's summer time.
@pytest.mark.parametrize(
    ("zone_name", "near"),
    [
        ("Antarctica/Casey", "2010-03-05"),
        ("Pacific/Apia", "2011-12-30"),
        ("Australia/Lord_Howe", "2025-04-06"),
        ("Asia/Kathmandu", "1986-01-01"),
        ("Europe/Berlin", "2025-10-26"),
    ],
)
def test_buckets_never_span_more_than_their_reach(zone_name: str, near: str) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    changes = offset_changes_near(datetime.fromisoformat(near).replace(tzinfo=UTC), zone)
    assert changes
    for change in changes:
        for granularity in Granularity:
            for count in (1, 2, 5):
                first = bucket_containing(change - bucket_reach(granularity, 1), granularity, zone)
                last = first
                for _ in range(count - 1):
                    last = bucket_containing(last.end, granularity, zone)
                assert last.end - first.start <= bucket_reach(granularity, count), (granularity, count)


def _shown(stretch: Stretch | BucketSpan, zone: zoneinfo.ZoneInfo) -> str:
    """A bucket as its local start and end, and its label."""
    label = stretch.label if isinstance(stretch, Stretch) else stretch.period
    return (
        f"[{stretch.start.astimezone(zone).isoformat()}, {stretch.end.astimezone(zone).isoformat()}) {label}"
    )


def differences_from_the_reference(zone_name: str, year: int) -> list[str]:
    """Where buckets_between and bucket_containing put bounds or labels other than the
    independent reference's, around the zone's clock changes of a year."""
    zone = zoneinfo.ZoneInfo(zone_name)
    found: list[str] = []
    for window in windows(zone_name, year):
        for granularity, stretches in reference_buckets(zone_name, window.start, window.end).items():
            ruled = list(buckets_between(window.start, window.end, granularity, zone))
            if [Stretch(span.start, span.end, span.period) for span in ruled] != list(stretches):
                found.append(
                    f"{granularity.value} buckets of [{window.start.isoformat()}, {window.end.isoformat()}):"
                    f" rule {[_shown(span, zone) for span in ruled]},"
                    f" reference {[_shown(stretch, zone) for stretch in stretches]}"
                )
            # The first, a middle and the last instant of each bucket, bucketed alone.
            for instant in itertools.chain.from_iterable(
                (
                    stretch.start,
                    stretch.start + (stretch.end - stretch.start) / 2,
                    stretch.end - ONE_MICROSECOND,
                )
                for stretch in stretches
            ):
                span = bucket_containing(instant, granularity, zone)
                expected = stretch_holding(stretches, instant)
                if Stretch(span.start, span.end, span.period) != expected:
                    found.append(
                        f"{granularity.value} bucket of {instant.isoformat()}: rule {_shown(span, zone)},"
                        f" reference {_shown(expected, zone)}"
                    )
    return found


@pytest.mark.parametrize("zone_name", ACCEPTED_ZONES)
def test_buckets_around_the_clock_changes_of_2025_are_the_reference_buckets(zone_name: str) -> None:
    assert differences_from_the_reference(zone_name, 2025) == []


@pytest.mark.parametrize(("zone_name", "year"), HISTORICAL_YEARS)
def test_buckets_around_clock_changes_of_other_kinds_are_the_reference_buckets(
    zone_name: str, year: int
) -> None:
    assert differences_from_the_reference(zone_name, year) == []
