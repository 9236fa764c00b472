"""The meaning of an aggregation query: validation, time zones and bucket labels."""

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support import SAMPLE_ZONES
from timeseries_aggregation.domain.aggregation import (
    AggregateQuery,
    TimeRange,
    make_aggregate_query,
    resolve_time_zone,
)
from timeseries_aggregation.domain.bucket_grid import FixedWidthBuckets, fixed_width_buckets
from timeseries_aggregation.domain.readings import EARLIEST_TIME, LATEST_TIME
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import Granularity

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

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

        assert (error.field, error.description) == (
            "series_id",
            "must not be empty; set series_id or selector",
        )

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
            assert resolved not in ("CET", "EET", "MET", "WET")
            assert zoneinfo.ZoneInfo(resolved).key == resolved

        assert rejected_field in (None, "time_zone")


@pytest.mark.parametrize("name", ["CET", "EET", "MET", "WET"])
def test_zones_the_database_reads_as_fixed_abbreviations_are_rejected(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        resolve_time_zone(name)
    assert raised.value.field == "time_zone"
    assert "fixed-offset abbreviation" in raised.value.description


@pytest.mark.parametrize("name", ["localtime", "Factory", "/etc/localtime", "europe/berlin", " UTC"])
def test_names_that_are_not_iana_zones_are_rejected(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        resolve_time_zone(name)
    assert raised.value.field == "time_zone"


@pytest.mark.parametrize(
    ("granularity", "zone", "expected"),
    [
        (Granularity.DAY_OF_MONTH, "UTC", FixedWidthBuckets(86_400, 0)),
        (Granularity.HOURLY, "UTC", FixedWidthBuckets(3_600, 0)),
        (Granularity.DAY_OF_MONTH, "Asia/Kolkata", FixedWidthBuckets(86_400, 86_400 - 19_800)),
        (Granularity.HOURLY, "Asia/Kolkata", FixedWidthBuckets(3_600, 1_800)),
        (Granularity.HOURLY, "Europe/Berlin", FixedWidthBuckets(3_600, 0)),
        (Granularity.DAY_OF_MONTH, "Europe/Berlin", None),
        (Granularity.HOURLY, "Asia/Kathmandu", None),  # +05:30 until 1986, +05:45 since
        (Granularity.HOURLY, "Australia/Lord_Howe", None),  # half-hour DST
        # +12:45 and +13:45 are of one phase, but the change at 02:45 cuts an hour.
        (Granularity.HOURLY, "Pacific/Chatham", None),
        (Granularity.QUARTER_HOURLY, "Pacific/Chatham", FixedWidthBuckets(900, 0)),
        (Granularity.MONTHLY, "UTC", None),
    ],
)
def test_fixed_width_buckets(granularity: Granularity, zone: str, expected: FixedWidthBuckets | None) -> None:
    assert fixed_width_buckets(granularity, zone) == expected


@given(
    instant=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
    ),
    zone_name=st.sampled_from([*SAMPLE_ZONES, "Australia/Lord_Howe", "Asia/Kolkata", "Etc/GMT+5"]),
    granularity=st.sampled_from([Granularity.HOURLY, Granularity.DAY_OF_MONTH]),
)
def test_fixed_width_buckets_start_at_local_hours_and_midnights(
    instant: datetime, zone_name: str, granularity: Granularity
) -> None:
    fixed = fixed_width_buckets(granularity, zone_name)
    assume(fixed is not None)
    assert fixed is not None
    seconds = int(instant.timestamp())
    start = seconds - (seconds - fixed.origin_unix_seconds) % fixed.width_seconds
    local_start = datetime.fromtimestamp(start, zoneinfo.ZoneInfo(zone_name))
    assert (local_start.minute, local_start.second) == (0, 0)
    if granularity is Granularity.DAY_OF_MONTH:
        assert local_start.hour == 0
        assert local_start.date() == instant.astimezone(zoneinfo.ZoneInfo(zone_name)).date()
    else:
        assert start <= seconds < start + 3_600
