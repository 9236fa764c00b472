"""Conversions between protobuf messages and domain values."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.domain.aggregation import Bucket
from timeseries_aggregation.domain.batch import ReadingBatch, first_violation
from timeseries_aggregation.domain.deletion import ReadingsDeletion, make_deletion
from timeseries_aggregation.domain.history import HistoryEntry
from timeseries_aggregation.domain.readings import check_series_id
from timeseries_aggregation.domain.series import (
    Series,
    SeriesSelector,
    SeriesUpdate,
    make_selector,
    make_series_update,
)
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import GRANULARITIES
from timeseries_aggregation.limits import MAX_READINGS_PER_MESSAGE
from timeseries_aggregation.wording import counted

# The table's proto values are the numbers of timeseries.v1.Granularity.
GRANULARITY_TO_PROTO = {info.granularity: cast("pb.Granularity", info.proto_value) for info in GRANULARITIES}
GRANULARITY_FROM_PROTO = {value: granularity for granularity, value in GRANULARITY_TO_PROTO.items()}


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


_NANOS_PER_MICRO = 1_000
_MICROS_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class _Located:
    """A problem at a position of the message's readings (row form first, then columns)."""

    position: int
    rank: int  # at one position, series_id is reported before time before quantity_kwh
    field: str
    description: str


def reading_count(request: pb.IngestReadingsRequest) -> int:
    """How many readings a message carries, in both of its forms, valid or not."""
    return len(request.readings) + sum(len(block.time_unix_micros) for block in request.series_readings)


def decode_ingest_message(
    request: pb.IngestReadingsRequest, message_number: int, stream_offset: int
) -> ReadingBatch:
    """Validate one stream message and return its readings as columns.

    Errors name the field inside the message, the message's number in the stream, and
    the reading's number in the stream (stream_offset readings came before this message).
    """
    rows = request.readings
    blocks = request.series_readings
    total = reading_count(request)
    if total > MAX_READINGS_PER_MESSAGE:
        raise InvalidArgumentError(
            "readings",
            f"message {message_number} holds {total} readings; send at most "
            f"{MAX_READINGS_PER_MESSAGE} per message",
        )
    row_batch, row_problem = _decode_rows(rows)
    batches = [row_batch]
    problems = [row_problem] if row_problem else []
    block_starts = []
    offset = len(rows)
    for number, block in enumerate(blocks):
        block_starts.append(offset)
        batch, problem = _decode_block(block, number, offset, message_number)
        batches.append(batch)
        if problem:
            problems.append(problem)
        offset += len(batch)
    batch = ReadingBatch.concatenate(batches)
    violation = first_violation(batch.time_unix_micros, batch.quantity_kwh)
    if violation is not None:
        field = _field_path(violation.position, violation.column, len(rows), block_starts)
        rank = 1 if violation.column == "time" else 2
        problems.append(_Located(violation.position, rank, field, violation.description))
    if problems:
        first = min(problems, key=lambda problem: (problem.position, problem.rank))
        raise InvalidArgumentError(
            first.field,
            f"{first.description} (message {message_number}, "
            f"reading {stream_offset + first.position} of the stream)",
        )
    return batch


def _field_path(position: int, column: str, row_count: int, block_starts: list[int]) -> str:
    """The field of the reading at a position: row-form readings first, then each block's."""
    if position < row_count:
        return f"readings[{position}].{column}"
    # The block holding the position is the last one starting at or before it (empty blocks
    # share their start with the next one and hold no position).
    block = max(number for number, start in enumerate(block_starts) if start <= position)
    name = "time_unix_micros" if column == "time" else column
    return f"series_readings[{block}].{name}[{position - block_starts[block]}]"


def _decode_rows(rows: Sequence[pb.Reading]) -> tuple[ReadingBatch, _Located | None]:
    """Row-form readings to columns: one pass of attribute reads, the checks vectorised."""
    positions: dict[str, int] = {}
    series_index = np.fromiter(
        (positions.setdefault(row.series_id, len(positions)) for row in rows), dtype=np.int32, count=len(rows)
    )
    times = [row.time for row in rows]
    seconds = np.fromiter((time.seconds for time in times), dtype=np.int64, count=len(rows))
    nanos = np.fromiter((time.nanos for time in times), dtype=np.int64, count=len(rows))
    quantity = np.fromiter((row.quantity_kwh for row in rows), dtype=np.float64, count=len(rows))
    problems = []
    for series_id, number in positions.items():
        try:
            check_series_id(series_id, "series_id")
        except InvalidArgumentError as error:
            first = int(np.argmax(series_index == number))
            problems.append(_Located(first, 0, f"readings[{first}].series_id", error.description))
    # An unset time reads as 0 s, 0 ns: only those few readings need the presence check.
    for unset in np.flatnonzero((seconds == 0) & (nanos == 0)).tolist():
        if not rows[unset].HasField("time"):
            problems.append(_Located(unset, 1, f"readings[{unset}].time", "is required"))
            break
    bad_nanos = (nanos < 0) | (nanos >= 1_000_000_000)
    if bad_nanos.any():
        at = int(np.argmax(bad_nanos))
        problems.append(_Located(at, 1, f"readings[{at}].time", "is not a valid timestamp"))
    # Clamp before multiplying so absurd seconds cannot overflow; the range check rejects them.
    limit = np.int64(2**62 // _MICROS_PER_SECOND)
    micros = np.clip(seconds, -limit, limit) * _MICROS_PER_SECOND + nanos // _NANOS_PER_MICRO
    batch = ReadingBatch(list(positions), series_index, micros, quantity)
    return batch, min(problems, key=lambda problem: (problem.position, problem.rank), default=None)


def _decode_block(
    block: pb.SeriesReadings, number: int, offset: int, message_number: int
) -> tuple[ReadingBatch, _Located | None]:
    """Columnar readings of one series: the repeated fields convert to arrays without copying per item."""
    times = np.array(block.time_unix_micros, dtype=np.int64)
    quantity = np.array(block.quantity_kwh, dtype=np.float64)
    problem = None
    try:
        check_series_id(block.series_id, "series_id")
    except InvalidArgumentError as error:
        problem = _Located(offset, 0, f"series_readings[{number}].series_id", error.description)
    if len(quantity) != len(times):
        raise InvalidArgumentError(
            f"series_readings[{number}].quantity_kwh",
            f"has {counted(len(quantity), 'entry', 'entries')} but time_unix_micros has {len(times)}; "
            "they must match "
            f"(message {message_number})",
        )
    batch = ReadingBatch([block.series_id], np.zeros(len(times), dtype=np.int32), times, quantity)
    return batch, problem


def buckets_response(
    buckets: Sequence[Bucket], next_page_token: str, group_by: Sequence[str] = ()
) -> pb.QueryAggregatesResponse:
    """The response for a page of buckets, built in place (a page can hold 10,000).

    This loop is a large part of a query's CPU time in the server (bench/call_path.py times
    it): each bucket's fields come unpacked from its tuple and are set one by one, which is
    cheaper than keyword arguments, and the fields still at their default are left alone.
    """
    response = pb.QueryAggregatesResponse(next_page_token=next_page_token)
    add = response.buckets.add
    for start, end, period, total, minimum, maximum, count, series_count, group, expected in buckets:
        message = add()
        message.start_time.seconds = start
        message.end_time.seconds = end
        message.period = period
        message.total_quantity_kwh = total
        message.min_quantity_kwh = minimum
        message.max_quantity_kwh = maximum
        if count:
            # The mean as Bucket.mean_quantity_kwh gives it, inline.
            message.mean_quantity_kwh = total / count
            message.reading_count = count
        if series_count:
            message.series_count = series_count
        if expected:
            message.expected_reading_count = expected
        if group_by:
            message.group.update(zip(group_by, group, strict=True))
    return response


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
        caller_name=entry.caller_name,
        group_by=entry.query.group_by,
        include_empty_buckets=entry.query.include_empty_buckets,
        selector_truncated=entry.selector_truncated,
        omitted_series_id_count=entry.omitted_series_ids,
        omitted_label_count=entry.omitted_labels,
    )
    selector = entry.query.selector
    if selector is not None:
        message.selector.labels.update(selector.labels)
        message.selector.series_ids.extend(selector.series_ids or ())
    _set_time(message.start_time, time_range.start_time)
    _set_time(message.end_time, time_range.end_time)
    return message


def _set_time(field: Timestamp, value: datetime | None) -> None:
    """Set a message's Timestamp field, leaving it absent for None."""
    if value is not None:
        field.CopyFrom(datetime_to_timestamp(value))


def series_update(request: pb.UpdateSeriesRequest) -> SeriesUpdate:
    series = request.series
    interval = None
    if series.HasField("reading_interval"):
        interval = (series.reading_interval.seconds, series.reading_interval.nanos)
    return make_series_update(series.series_id, series.labels, interval, list(request.update_mask.paths))


def series_selector(selector: pb.SeriesSelector, field: str = "selector") -> SeriesSelector:
    return make_selector(list(selector.series_ids), selector.labels, field)


def series_message(series: Series) -> pb.Series:
    message = pb.Series(series_id=series.series_id, labels=series.labels, reading_count=series.reading_count)
    if series.reading_interval_seconds is not None:
        message.reading_interval.seconds = series.reading_interval_seconds
    _set_time(message.first_reading_time, series.first_reading_time)
    _set_time(message.last_reading_time, series.last_reading_time)
    return message


def readings_deletion(request: pb.DeleteReadingsRequest) -> ReadingsDeletion:
    selector = series_selector(request.selector) if request.HasField("selector") else None
    start_time = (
        timestamp_to_datetime(request.start_time, "start_time") if request.HasField("start_time") else None
    )
    end_time = timestamp_to_datetime(request.end_time, "end_time") if request.HasField("end_time") else None
    return make_deletion(selector, start_time, end_time)
