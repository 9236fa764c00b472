"""The meaning of an aggregation query: validation, time zones and bucket labels."""

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support import SAMPLE_ZONES
from timeseries_aggregation.domain.aggregation import (
    AggregateQuery,
    Granularity,
    TimeRange,
    make_aggregate_query,
    period_label,
    resolve_time_zone,
)
from timeseries_aggregation.domain.readings import EARLIEST_TIME, LATEST_TIME
from timeseries_aggregation.errors import InvalidArgumentError

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

ONE_MICROSECOND = timedelta(microseconds=1)
JANUARY = datetime(2025, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2025, 2, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    """An aware UTC datetime from an ISO string without offset."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def query_error(
    series_id: str = "meter-1",
    granularity: Granularity | None = Granularity.HOURLY,
    start_time: datetime | None = JANUARY,
    end_time: datetime | None = FEBRUARY,
    time_zone: str = "Europe/Berlin",
) -> InvalidArgumentError:
    """The error make_aggregate_query raises for a query that is valid except where overridden."""
    with pytest.raises(InvalidArgumentError) as caught:
        make_aggregate_query(series_id, granularity, start_time, end_time, time_zone)
    return caught.value


def labels(instant: datetime, zone: zoneinfo.ZoneInfo) -> tuple[str, str, str]:
    """The monthly, daily and hourly labels of a bucket starting at instant."""
    return (
        period_label(instant, Granularity.MONTHLY, zone),
        period_label(instant, Granularity.DAY_OF_MONTH, zone),
        period_label(instant, Granularity.HOURLY, zone),
    )


class TestMakeAggregateQuery:
    def test_valid_parts_make_a_query(self) -> None:
        query = make_aggregate_query("meter-1", Granularity.DAY_OF_MONTH, JANUARY, FEBRUARY, "Europe/Berlin")

        assert query == AggregateQuery(
            "meter-1", Granularity.DAY_OF_MONTH, TimeRange(JANUARY, FEBRUARY), "Europe/Berlin"
        )
        assert query.zone == BERLIN

    def test_empty_time_zone_means_utc(self) -> None:
        query = make_aggregate_query("meter-1", Granularity.MONTHLY, None, None, "")

        assert query.time_zone == "UTC"
        assert query.zone == zoneinfo.ZoneInfo("UTC")

    def test_missing_bounds_mean_the_whole_supported_range(self) -> None:
        time_range = make_aggregate_query("meter-1", Granularity.HOURLY, None, None, "UTC").time_range

        assert time_range == TimeRange(None, None)
        assert time_range.lower_bound == EARLIEST_TIME
        assert time_range.upper_bound == LATEST_TIME

    @pytest.mark.parametrize(
        ("start_time", "end_time"),
        [(EARLIEST_TIME, LATEST_TIME), (None, LATEST_TIME), (EARLIEST_TIME, None), (JANUARY, None)],
    )
    def test_bounds_at_the_edges_of_the_range_are_accepted(
        self, start_time: datetime | None, end_time: datetime | None
    ) -> None:
        query = make_aggregate_query("meter-1", Granularity.HOURLY, start_time, end_time, "UTC")

        assert query.time_range == TimeRange(start_time, end_time)

    def test_empty_series_id_is_rejected(self) -> None:
        error = query_error(series_id="")

        assert (error.field, error.description) == ("series_id", "must not be empty")

    def test_series_id_rules_apply(self) -> None:
        assert query_error(series_id="x" * 129).field == "series_id"
        assert query_error(series_id="meter\n1").field == "series_id"

    def test_missing_granularity_is_rejected_listing_the_choices(self) -> None:
        error = query_error(granularity=None)

        assert error.field == "granularity"
        for choice in ("GRANULARITY_HOURLY", "GRANULARITY_DAY_OF_MONTH", "GRANULARITY_MONTHLY"):
            assert choice in error.description

    @pytest.mark.parametrize("end_time", [JANUARY, JANUARY - ONE_MICROSECOND], ids=["equal", "before"])
    def test_start_not_before_end_is_rejected(self, end_time: datetime) -> None:
        error = query_error(start_time=JANUARY, end_time=end_time)

        assert error.field == "start_time"
        assert error.description == (
            f"must be before end_time, got {JANUARY.isoformat()} >= {end_time.isoformat()}"
        )

    @pytest.mark.parametrize(
        "start_time", [EARLIEST_TIME - ONE_MICROSECOND, LATEST_TIME], ids=["before-earliest", "latest"]
    )
    def test_start_out_of_range_is_rejected(self, start_time: datetime) -> None:
        error = query_error(start_time=start_time, end_time=None)

        assert error.field == "start_time"
        assert "outside the supported range" in error.description

    @pytest.mark.parametrize(
        "end_time",
        [EARLIEST_TIME - ONE_MICROSECOND, LATEST_TIME + ONE_MICROSECOND],
        ids=["before-earliest", "after-latest"],
    )
    def test_end_out_of_range_is_rejected(self, end_time: datetime) -> None:
        error = query_error(start_time=None, end_time=end_time)

        assert error.field == "end_time"
        assert "outside the supported range" in error.description

    @pytest.mark.parametrize(
        "time_zone",
        [
            "Mars/Olympus_Mons",
            "Europe",
            "Europe/Berlin ",
            "../../etc/passwd",
            "/etc/localtime",
            "Europe/Berlin\x00",
        ],
    )
    def test_unknown_time_zone_is_rejected_with_an_example(self, time_zone: str) -> None:
        error = query_error(time_zone=time_zone)

        assert error.field == "time_zone"
        assert error.description == f"{time_zone!r} is not a known IANA time zone (e.g. 'Europe/Berlin')"

    @pytest.mark.parametrize("time_zone", SAMPLE_ZONES)
    def test_known_time_zones_are_kept_as_given(self, time_zone: str) -> None:
        assert resolve_time_zone(time_zone) == time_zone

    @given(st.text(max_size=40))
    def test_any_time_zone_text_resolves_or_is_rejected_as_time_zone(self, time_zone: str) -> None:
        rejected_field: str | None = None
        try:
            resolved = resolve_time_zone(time_zone)
        except InvalidArgumentError as error:
            rejected_field = error.field
        else:
            assert resolved == (time_zone or "UTC")
            assert zoneinfo.ZoneInfo(resolved).key == resolved

        assert rejected_field in (None, "time_zone")


class TestPeriodLabel:
    def test_utc_labels(self) -> None:
        assert labels(utc("2025-10-01T13:00"), zoneinfo.ZoneInfo("UTC")) == (
            "2025-10",
            "2025-10-01",
            "2025-10-01T13:00",
        )

    def test_berlin_labels_use_local_wall_time(self) -> None:
        # 23:00 UTC on 31 January is midnight of 1 February in Berlin (CET, UTC+1).
        assert labels(utc("2025-01-31T23:00"), BERLIN) == ("2025-02", "2025-02-01", "2025-02-01T00:00")
        # 22:00 UTC on 30 June is midnight of 1 July in Berlin (CEST, UTC+2).
        assert labels(utc("2025-06-30T22:00"), BERLIN) == ("2025-07", "2025-07-01", "2025-07-01T00:00")

    def test_fall_back_night_has_two_hour_buckets_with_the_same_label(self) -> None:
        # On 2025-10-26 Berlin clocks go from 03:00 CEST back to 02:00 CET: 02:00 happens twice.
        hour_starts = [utc("2025-10-25T22:00") + timedelta(hours=hours) for hours in range(5)]

        assert [period_label(start, Granularity.HOURLY, BERLIN) for start in hour_starts] == [
            "2025-10-26T00:00",
            "2025-10-26T01:00",
            "2025-10-26T02:00",
            "2025-10-26T02:00",
            "2025-10-26T03:00",
        ]
        assert hour_starts[2] == utc("2025-10-26T00:00")
        assert hour_starts[3] == utc("2025-10-26T01:00")

    def test_fall_back_day_is_one_bucket_of_25_hours(self) -> None:
        day_start, next_day_start = utc("2025-10-25T22:00"), utc("2025-10-26T23:00")

        assert next_day_start - day_start == timedelta(hours=25)
        assert period_label(day_start, Granularity.DAY_OF_MONTH, BERLIN) == "2025-10-26"
        assert period_label(next_day_start, Granularity.DAY_OF_MONTH, BERLIN) == "2025-10-27"
        assert period_label(day_start, Granularity.MONTHLY, BERLIN) == "2025-10"

    def test_spring_forward_night_has_no_two_oclock_label(self) -> None:
        # On 2025-03-30 Berlin clocks jump from 02:00 CET to 03:00 CEST: 02:00 never happens.
        hour_starts = [utc("2025-03-29T23:00") + timedelta(hours=hours) for hours in range(4)]

        assert [period_label(start, Granularity.HOURLY, BERLIN) for start in hour_starts] == [
            "2025-03-30T00:00",
            "2025-03-30T01:00",
            "2025-03-30T03:00",
            "2025-03-30T04:00",
        ]

    def test_spring_forward_day_is_one_bucket_of_23_hours(self) -> None:
        day_start, next_day_start = utc("2025-03-29T23:00"), utc("2025-03-30T22:00")

        assert next_day_start - day_start == timedelta(hours=23)
        assert period_label(day_start, Granularity.DAY_OF_MONTH, BERLIN) == "2025-03-30"
        assert period_label(next_day_start, Granularity.DAY_OF_MONTH, BERLIN) == "2025-03-31"
        assert period_label(day_start, Granularity.MONTHLY, BERLIN) == "2025-03"

    def test_month_label_in_a_zone_behind_utc(self) -> None:
        # Midnight UTC on 1 March is still 28 February in New York.
        new_york = zoneinfo.ZoneInfo("America/New_York")

        assert labels(utc("2025-03-01T00:00"), new_york) == ("2025-02", "2025-02-28", "2025-02-28T19:00")

    @given(
        st.datetimes(
            min_value=datetime(2000, 1, 2),
            max_value=datetime(2029, 12, 30, 23, 0),
        ),
        st.sampled_from(SAMPLE_ZONES),
        st.sampled_from([0, 1]),
    )
    def test_labels_of_a_local_hour_start_nest_and_match_its_wall_time(
        self, wall_time: datetime, zone_name: str, fold: int
    ) -> None:
        zone = zoneinfo.ZoneInfo(zone_name)
        hour_start = wall_time.replace(minute=0, second=0, microsecond=0, fold=fold)
        instant = hour_start.replace(tzinfo=zone).astimezone(UTC)
        local = instant.astimezone(zone)
        # Skip wall times that a spring-forward gap removed: no instant has them.
        assume(local.replace(tzinfo=None) == hour_start)

        monthly, daily, hourly = labels(instant, zone)

        assert hourly.startswith(daily)
        assert daily.startswith(monthly)
        assert hourly == f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:00"
        assert daily == local.date().isoformat()
        assert monthly == f"{local.year:04d}-{local.month:02d}"

    @given(
        st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2029, 12, 31, 23, 59, 59, 999999),
            timezones=st.just(UTC),
        ),
        st.sampled_from(SAMPLE_ZONES),
    )
    def test_label_of_any_instant_is_its_local_date_and_hour(self, instant: datetime, zone_name: str) -> None:
        zone = zoneinfo.ZoneInfo(zone_name)
        local = instant.astimezone(zone)

        assert period_label(instant, Granularity.HOURLY, zone) == local.isoformat()[:14] + "00"
        assert period_label(instant, Granularity.DAY_OF_MONTH, zone) == local.date().isoformat()
        assert period_label(instant, Granularity.MONTHLY, zone) == local.date().isoformat()[:7]

    @given(
        st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2029, 12, 31, 23, 59, 59, 999999),
            timezones=st.just(UTC),
        ),
        st.sampled_from(SAMPLE_ZONES),
    )
    def test_label_depends_on_the_instant_not_on_the_offset_it_is_given_in(
        self, instant: datetime, zone_name: str
    ) -> None:
        zone = zoneinfo.ZoneInfo(zone_name)
        elsewhere = instant.astimezone(zoneinfo.ZoneInfo("Pacific/Chatham"))

        for granularity in Granularity:
            assert period_label(elsewhere, granularity, zone) == period_label(instant, granularity, zone)


@pytest.mark.parametrize("name", ["localtime", "Factory", "/etc/localtime", "europe/berlin", " UTC"])
def test_names_that_are_not_iana_zones_are_rejected(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        resolve_time_zone(name)
    assert raised.value.field == "time_zone"
