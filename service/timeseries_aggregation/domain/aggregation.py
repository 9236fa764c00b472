"""The meaning of an aggregation query: granularity, range, time zone and bucket labels."""

import math
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from timeseries_aggregation.domain.readings import (
    EARLIEST_TIME,
    LATEST_TIME,
    check_series_id,
    check_time,
)
from timeseries_aggregation.domain.series import SERIES_ID_KEY, SeriesSelector, check_labels
from timeseries_aggregation.domain.time_zones import check_time_zone
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import Granularity
from timeseries_aggregation.limits import MAX_GROUP_BY, QUANTITY_KWH_MAX_MAGNITUDE
from timeseries_aggregation.wording import quoted

DEFAULT_TIME_ZONE = "UTC"


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open interval [start_time, end_time); None means unbounded on that side."""

    start_time: datetime | None
    end_time: datetime | None

    @property
    def lower_bound(self) -> datetime:
        """The start as a concrete instant: unbounded means the earliest storable time."""
        return self.start_time or EARLIEST_TIME

    @property
    def upper_bound(self) -> datetime:
        """The end as a concrete instant: unbounded means the latest storable time."""
        return self.end_time or LATEST_TIME


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """A validated QueryAggregates request, without its paging: of one series (series_id),
    or of the series a selector picks (series_id empty), optionally grouped."""

    series_id: str
    granularity: Granularity
    time_range: TimeRange
    time_zone: str
    selector: SeriesSelector | None = None
    group_by: tuple[str, ...] = ()
    include_empty_buckets: bool = False

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @property
    def is_portfolio(self) -> bool:
        """Whether the answer takes the general path (series together, in groups, or with empty
        buckets) rather than the one-series statement."""
        return self.selector is not None or bool(self.group_by) or self.include_empty_buckets

    @property
    def members(self) -> SeriesSelector:
        """The series whose readings the query aggregates."""
        if self.selector is not None:
            return self.selector
        return SeriesSelector(series_ids=(self.series_id,), labels={})

    @property
    def series_ids_field(self) -> str:
        """The request field that names the query's series by id, for an error about them."""
        return "series_id" if self.selector is None else "selector.series_ids"


class Bucket(NamedTuple):
    """Statistics of the readings of one series, or of a group of series, in one bucket.

    Bucket bounds are whole seconds in every zone of the supported range, and a plain
    tuple keeps a page of thousands of buckets cheap to build.
    """

    start_unix_seconds: int
    end_unix_seconds: int
    period: str
    total_quantity_kwh: float
    min_quantity_kwh: float
    max_quantity_kwh: float
    reading_count: int
    # Series with readings in the bucket, and the group's values in group_by order.
    series_count: int = 1
    group: tuple[str, ...] = ()
    # Readings the bucket should hold by its series' declared intervals (domain/coverage.py).
    expected_reading_count: int = 0

    @property
    def mean_quantity_kwh(self) -> float:
        # The same division SQL's avg() makes, without a third running sum per bucket; an empty
        # bucket (asked for with include_empty_buckets) has a mean of 0, as its other statistics.
        if not self.reading_count:
            return 0.0
        return self.total_quantity_kwh / self.reading_count


def credible_total(total: float | None, minimum: float, maximum: float) -> float:
    """A bucket's total as answered: NaN where the bucket holds a reading beyond the bound of
    limits.py (stored before ingest refused such readings), else the total summed.

    Such readings can add up past a double, and whether they do depends on the order of the
    additions, which differs between readings and rollups, plans and engines; the minimum and
    maximum are exact everywhere, so deciding by them gives every path the same answer. The
    minimum and maximum are answered as stored and show the reading.
    """
    if minimum >= -QUANTITY_KWH_MAX_MAGNITUDE and maximum <= QUANTITY_KWH_MAX_MAGNITUDE:
        assert total is not None
        return total
    return math.nan


def resolve_time_zone(name: str) -> str:
    """Return the IANA name to use (UTC when none is given), or raise InvalidArgumentError."""
    if not name:
        return DEFAULT_TIME_ZONE
    return check_time_zone(name, "time_zone")


# group_by entries: label keys, or this word for one group per series (no label may be named so).
GROUP_BY_SERIES = SERIES_ID_KEY


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    """The group_by entries, or InvalidArgumentError naming the first bad one."""
    if len(group_by) > MAX_GROUP_BY:
        raise InvalidArgumentError("group_by", f"has {len(group_by)} entries; the maximum is {MAX_GROUP_BY}")
    for position, key in enumerate(group_by):
        field = f"group_by[{position}]"
        if key in group_by[:position]:
            raise InvalidArgumentError(field, f"{quoted(key)} is there already")
        if key != GROUP_BY_SERIES:
            try:
                check_labels({key: ""}, field)
            except InvalidArgumentError:
                raise InvalidArgumentError(
                    field,
                    f"{quoted(key)} is neither a label key (a-z, 0-9 and _, from a letter) nor 'series_id'",
                ) from None
    return tuple(group_by)


def make_aggregate_query(
    series_id: str,
    granularity: Granularity | None,
    start_time: datetime | None,
    end_time: datetime | None,
    time_zone: str,
    selector: SeriesSelector | None = None,
    group_by: Sequence[str] = (),
    include_empty_buckets: bool = False,
) -> AggregateQuery:
    """Validate the parts of a query request and combine them."""
    if selector is not None:
        if series_id:
            raise InvalidArgumentError("selector", "must not be set together with series_id; set one of them")
        if selector.is_empty:
            raise InvalidArgumentError("selector", "must name series_ids, labels or both")
    else:
        try:
            check_series_id(series_id, "series_id", allow_blank=True)
        except InvalidArgumentError as error:
            if series_id:
                raise
            raise InvalidArgumentError("series_id", "must not be empty; set series_id or selector") from error
    groups = check_group_by(group_by)
    if granularity is None:
        names = ", ".join(f"GRANULARITY_{granularity.name}" for granularity in Granularity)
        raise InvalidArgumentError("granularity", f"must be one of {names}")
    if start_time is not None:
        check_time(start_time, "start_time")
    if end_time is not None and end_time != LATEST_TIME:
        check_time(end_time, "end_time")
    if start_time is not None and end_time is not None and start_time >= end_time:
        raise InvalidArgumentError(
            "start_time",
            f"must be before end_time, got {start_time.isoformat()} >= {end_time.isoformat()}",
        )
    return AggregateQuery(
        series_id=series_id,
        granularity=granularity,
        time_range=TimeRange(start_time, end_time),
        time_zone=resolve_time_zone(time_zone),
        selector=selector,
        group_by=groups,
        include_empty_buckets=include_empty_buckets,
    )
