"""Conversions between protobuf messages and domain values."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.aggregation import Bucket, Granularity
from timeseries_aggregation.domain.history import HistoryEntry
from timeseries_aggregation.domain.readings import check_quantity, check_series_id, check_time
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.storage.readings import ReadingRecord

GRANULARITY_FROM_PROTO = {
    pb.GRANULARITY_HOURLY: Granularity.HOURLY,
    pb.GRANULARITY_DAY_OF_MONTH: Granularity.DAY_OF_MONTH,
    pb.GRANULARITY_MONTHLY: Granularity.MONTHLY,
}
GRANULARITY_TO_PROTO = {value: key for key, value in GRANULARITY_FROM_PROTO.items()}


def timestamp_to_datetime(timestamp: Timestamp, field: str) -> datetime:
    """A UTC datetime (microsecond precision, as PostgreSQL stores it) from a Timestamp."""
    try:
        return timestamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidArgumentError(field, "is not a valid timestamp") from error


def datetime_to_timestamp(value: datetime) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


def optional_time(
    message: pb.QueryAggregatesRequest, field: Literal["start_time", "end_time"]
) -> datetime | None:
    if not message.HasField(field):
        return None
    return timestamp_to_datetime(getattr(message, field), field)


def reading_records(readings: Sequence[pb.Reading], first_index: int) -> list[ReadingRecord]:
    """Validate a batch of readings; first_index numbers them within the whole stream."""
    records: list[ReadingRecord] = []
    for index, reading in enumerate(readings, first_index):
        prefix = f"readings[{index}]"
        check_series_id(reading.series_id, f"{prefix}.series_id")
        if not reading.HasField("time"):
            raise InvalidArgumentError(f"{prefix}.time", "is required")
        time = timestamp_to_datetime(reading.time, f"{prefix}.time")
        check_time(time, f"{prefix}.time")
        check_quantity(reading.quantity_kwh, f"{prefix}.quantity_kwh")
        records.append((reading.series_id, time, reading.quantity_kwh))
    return records


def bucket_message(bucket: Bucket) -> pb.Bucket:
    return pb.Bucket(
        start_time=datetime_to_timestamp(bucket.start_time),
        end_time=datetime_to_timestamp(bucket.end_time),
        period=bucket.period,
        total_quantity_kwh=bucket.total_quantity_kwh,
        min_quantity_kwh=bucket.min_quantity_kwh,
        max_quantity_kwh=bucket.max_quantity_kwh,
        mean_quantity_kwh=bucket.mean_quantity_kwh,
        reading_count=bucket.reading_count,
    )


def history_entry_message(entry: HistoryEntry) -> pb.QueryHistoryEntry:
    time_range = entry.query.time_range
    message = pb.QueryHistoryEntry(
        id=entry.id,
        query_time=datetime_to_timestamp(entry.query_time),
        series_id=entry.query.series_id,
        granularity=GRANULARITY_TO_PROTO[entry.query.granularity],
        time_zone=entry.query.time_zone,
        page_size=entry.page_size,
        continued_page=entry.continued_page,
        bucket_count=entry.bucket_count,
    )
    if time_range.start_time is not None:
        message.start_time.CopyFrom(datetime_to_timestamp(time_range.start_time))
    if time_range.end_time is not None:
        message.end_time.CopyFrom(datetime_to_timestamp(time_range.end_time))
    return message
