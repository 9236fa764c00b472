"""What a DeleteReadings request may remove: the readings of selected series in a range."""

from dataclasses import dataclass
from datetime import datetime

from timeseries_aggregation.domain.readings import LATEST_TIME, check_time
from timeseries_aggregation.domain.series import SeriesSelector
from timeseries_aggregation.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class ReadingsDeletion:
    """The readings of the selected series in [start_time, end_time)."""

    selector: SeriesSelector
    start_time: datetime
    end_time: datetime


def make_deletion(
    selector: SeriesSelector | None, start_time: datetime | None, end_time: datetime | None
) -> ReadingsDeletion:
    """Validate a deletion: a selector that names something, and a bounded, ordered range."""
    if selector is None or selector.is_empty:
        raise InvalidArgumentError("selector", "is required: name the series by series_ids, labels or both")
    if start_time is None:
        raise InvalidArgumentError("start_time", "is required")
    if end_time is None:
        raise InvalidArgumentError("end_time", "is required")
    check_time(start_time, "start_time")
    if end_time != LATEST_TIME:  # the end is exclusive: the end of the storable range is fine
        check_time(end_time, "end_time")
    if start_time >= end_time:
        raise InvalidArgumentError(
            "start_time",
            f"must be before end_time, got {start_time.isoformat()} >= {end_time.isoformat()}",
        )
    return ReadingsDeletion(selector, start_time, end_time)
