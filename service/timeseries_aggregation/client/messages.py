"""Request messages built on the client side: ingest in the forms the service accepts, queries,
the series catalog's updates and listings, and deletions of readings."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict, TypeVar, Unpack

from google.protobuf.field_mask_pb2 import FieldMask

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.client.results import GRANULARITY_NAMES
from timeseries_aggregation.limits import MAX_READINGS_PER_MESSAGE

MICROS_PER_SECOND = 1_000_000
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading to ingest: a meter, an instant (naive means UTC), and energy in kWh."""

    series_id: str
    time: datetime
    quantity_kwh: float


ReadingLike = Reading | tuple[str, datetime, float]


def unix_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch; a naive datetime counts as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


def check_message_size(message_size: int, name: str = "message_size") -> None:
    """Raise ValueError unless message_size readings fit in one message of the API."""
    if not 1 <= message_size <= MAX_READINGS_PER_MESSAGE:
        raise ValueError(f"{name} must be 1 to {MAX_READINGS_PER_MESSAGE:,} readings, got {message_size}")


def batch_message(readings: Sequence[ReadingLike]) -> pb.IngestReadingsRequest:
    """One message in the columnar form, a block per series. Readings of one series keep
    their order, so the last of a repeated key still wins."""
    blocks: dict[str, pb.SeriesReadings] = {}
    for reading in readings:
        if isinstance(reading, Reading):
            series_id, moment, quantity = reading.series_id, reading.time, reading.quantity_kwh
        else:
            series_id, moment, quantity = reading
        block = blocks.get(series_id)
        if block is None:
            block = blocks[series_id] = pb.SeriesReadings(series_id=series_id)
        block.time_unix_micros.append(unix_micros(moment))
        block.quantity_kwh.append(quantity)
    return pb.IngestReadingsRequest(series_readings=list(blocks.values()))


Number = TypeVar("Number", int, float)


def _as_list(column: Iterable[Number], name: str) -> list[Number]:
    """A column as a list: arrays with tolist() (numpy's) turn into Python numbers in one call,
    the form protobuf's repeated fields take fastest."""
    if not isinstance(column, Iterable):
        raise TypeError(f"{name} must be a sequence or an array, got {type(column).__name__}")
    to_list = getattr(column, "tolist", None)
    values: list[Number] = to_list() if callable(to_list) else list(column)
    return values


def series_messages(
    series_id: str,
    time_unix_micros: Iterable[int],
    quantity_kwh: Iterable[float],
    message_size: int,
) -> Iterator[pb.IngestReadingsRequest]:
    """Readings of one series in columnar messages of message_size readings: the cheapest
    form to encode, send and decode. The columns are lists, sequences or arrays (numpy's
    included, though numpy is not needed); checks their lengths and message_size at once,
    before any message, and the values as each message is built (a time must be an int)."""
    check_message_size(message_size)
    times = _as_list(time_unix_micros, "time_unix_micros")
    quantities = _as_list(quantity_kwh, "quantity_kwh")
    if len(times) != len(quantities):
        raise ValueError("time_unix_micros and quantity_kwh must have the same length")
    return _column_messages(series_id, times, quantities, message_size)


def _column_messages(
    series_id: str, times: list[int], quantities: list[float], message_size: int
) -> Iterator[pb.IngestReadingsRequest]:
    for start in range(0, len(times), message_size):
        end = start + message_size
        columns = pb.SeriesReadings(series_id=series_id)
        columns.time_unix_micros.extend(times[start:end])
        columns.quantity_kwh.extend(quantities[start:end])
        yield pb.IngestReadingsRequest(series_readings=[columns])


def row_messages(
    readings: Iterable[tuple[str, int, float]], message_size: int
) -> Iterator[pb.IngestReadingsRequest]:
    """(series_id, unix microseconds, kWh) readings in row-form messages of message_size;
    checks message_size at once, before any message."""
    check_message_size(message_size)
    return _row_messages(readings, message_size)


def _row_messages(
    readings: Iterable[tuple[str, int, float]], message_size: int
) -> Iterator[pb.IngestReadingsRequest]:
    batch: list[pb.Reading] = []
    for series_id, micros, quantity in readings:
        seconds, remainder = divmod(micros, MICROS_PER_SECOND)
        reading = pb.Reading(series_id=series_id, quantity_kwh=quantity)
        reading.time.seconds = seconds
        reading.time.nanos = remainder * 1_000
        batch.append(reading)
        if len(batch) == message_size:
            yield pb.IngestReadingsRequest(readings=batch)
            batch = []
    if batch:
        yield pb.IngestReadingsRequest(readings=batch)


class QueryOptions(TypedDict, total=False):
    """What narrows or shapes a query besides its series, granularity and groups."""

    start_time: datetime | None
    end_time: datetime | None
    time_zone: str
    page_size: int
    # Every bucket of the range, also those without readings (with zero statistics).
    include_empty_buckets: bool


def query_request(
    series_id: str | None,
    granularity: str | int,
    *,
    series_ids: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    group_by: Sequence[str] = (),
    **options: Unpack[QueryOptions],
) -> pb.QueryAggregatesRequest:
    """A first-page request of series_id or, with series_id None, of the series with these ids
    (when given) that carry every label pair given; granularity is 'hourly', 'daily', 'monthly'
    (and so on) or a Granularity value. group_by takes label keys, or 'series_id', for buckets
    per group."""
    if isinstance(group_by, str):
        # As with series_ids: its characters would be sent as one-letter keys.
        raise TypeError("group_by takes a collection of label keys, not one string")
    selector = _selector(series_ids, labels)
    has_selector = bool(selector.series_ids or selector.labels)
    if series_id is not None and has_selector:
        raise ValueError("give series_id or a selector (series_ids, labels), not both")
    if series_id is None and not has_selector:
        raise ValueError("name the series to query: give series_id, or series_ids, labels or both")
    start_time = options.get("start_time")
    end_time = options.get("end_time")
    if isinstance(granularity, str):
        try:
            granularity = GRANULARITY_NAMES[granularity]
        except KeyError:
            raise ValueError(
                f"granularity must be one of {sorted(GRANULARITY_NAMES)}, got {granularity!r}"
            ) from None
    request = pb.QueryAggregatesRequest(
        series_id=series_id or "",
        granularity=granularity,  # type: ignore[arg-type]
        time_zone=options.get("time_zone", ""),
        page_size=options.get("page_size", 0),
        group_by=group_by,
        include_empty_buckets=options.get("include_empty_buckets", False),
    )
    if has_selector:
        request.selector.CopyFrom(selector)
    if start_time is not None:
        request.start_time.FromMicroseconds(unix_micros(start_time))
    if end_time is not None:
        request.end_time.FromMicroseconds(unix_micros(end_time))
    return request


def update_series_request(
    series_id: str,
    labels: Mapping[str, str] | None = None,
    reading_interval: timedelta | None = None,
    clear_reading_interval: bool = False,
) -> pb.UpdateSeriesRequest:
    """An UpdateSeries request whose mask names only what is given: labels (None keeps the
    stored ones, {} removes them all) and the reading interval (set, cleared, or kept)."""
    if reading_interval is not None and clear_reading_interval:
        raise ValueError("give reading_interval or clear_reading_interval, not both")
    series = pb.Series(series_id=series_id)
    paths = []
    if labels is not None:
        series.labels.update(labels)
        paths.append("labels")
    if reading_interval is not None:
        series.reading_interval.FromTimedelta(reading_interval)
        paths.append("reading_interval")
    elif clear_reading_interval:
        # In the mask but absent from the series: the service clears it.
        paths.append("reading_interval")
    if not paths:
        # The service reads an empty mask as every field, which would clear what is not given.
        raise ValueError("nothing to update: give labels, reading_interval or clear_reading_interval")
    return pb.UpdateSeriesRequest(series=series, update_mask=FieldMask(paths=paths))


def list_series_request(
    series_ids: Sequence[str] = (), labels: Mapping[str, str] | None = None, page_size: int = 0
) -> pb.ListSeriesRequest:
    """A first-page ListSeries request; without series_ids or labels it lists every series."""
    return pb.ListSeriesRequest(selector=_selector(series_ids, labels), page_size=page_size)


def delete_readings_request(
    series_ids: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    *,
    start_time: datetime,
    end_time: datetime,
) -> pb.DeleteReadingsRequest:
    """A DeleteReadings request: the readings in [start_time, end_time) (naive means UTC) of the
    series with these ids (when given) that carry every label pair given."""
    selector = _selector(series_ids, labels)
    if not selector.series_ids and not selector.labels:
        # The service refuses it too: a deletion never means every series.
        raise ValueError("name the series to delete from: give series_ids, labels or both")
    request = pb.DeleteReadingsRequest(selector=selector)
    request.start_time.FromMicroseconds(unix_micros(start_time))
    request.end_time.FromMicroseconds(unix_micros(end_time))
    return request


def _selector(series_ids: Sequence[str], labels: Mapping[str, str] | None) -> pb.SeriesSelector:
    if isinstance(series_ids, str):
        # A string is a sequence too: its characters would be sent as one-letter series ids.
        raise TypeError("series_ids takes a collection of series ids, not one string")
    return pb.SeriesSelector(series_ids=series_ids, labels=labels or {})
