"""What the clients return: typed results with aware datetimes, the raw message one attribute away."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.granularities import GRANULARITY_BY_NAME, GRANULARITY_BY_PROTO

# The names queries take for each granularity (timeseries_aggregation/granularities.py).
GRANULARITY_NAMES = {name: info.proto_value for name, info in GRANULARITY_BY_NAME.items()}


def _utc(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


def granularity_name(value: int) -> str:
    """'hourly', 'daily', 'monthly' and so on; the number itself for a value newer than this client."""
    info = GRANULARITY_BY_PROTO.get(value)
    return info.name if info else str(value)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What a committed ingest stream reports.

    keys_written counts the distinct (series, time) keys written (fewer than readings_received
    when the stream repeated keys; None when the server did not count them), keys_added those
    of them that were new to their series.
    """

    readings_received: int
    messages_received: int
    series_count: int
    keys_written: int | None
    keys_added: int
    raw: pb.IngestReadingsResponse = field(repr=False, compare=False)

    @classmethod
    def from_message(cls, message: pb.IngestReadingsResponse) -> "IngestResult":
        return cls(
            message.readings_received,
            message.messages_received,
            message.series_count,
            message.keys_written if message.HasField("keys_written") else None,
            message.keys_added,
            message,
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One aggregation bucket: [start_time, end_time) in UTC, its local period label and figures.

    group holds a value for each group_by key of the query (empty without group_by);
    series_count counts the series with readings in the bucket; expected_reading_count is how
    many readings the declared reading intervals of the group's series expect in it (0 where
    none is declared). Their defaults describe a bucket of one series, as before selectors.
    """

    period: str
    start_time: datetime
    end_time: datetime
    total_quantity_kwh: float
    min_quantity_kwh: float
    max_quantity_kwh: float
    mean_quantity_kwh: float
    reading_count: int
    raw: pb.Bucket = field(repr=False, compare=False)
    group: dict[str, str] = field(default_factory=dict)
    series_count: int = 1
    expected_reading_count: int = 0

    @property
    def completeness(self) -> float | None:
        """reading_count / expected_reading_count; None when no reading is expected."""
        if not self.expected_reading_count:
            return None
        return self.reading_count / self.expected_reading_count

    @classmethod
    def from_message(cls, message: pb.Bucket) -> "Bucket":
        return cls(
            period=message.period,
            start_time=_utc(message.start_time),
            end_time=_utc(message.end_time),
            total_quantity_kwh=message.total_quantity_kwh,
            min_quantity_kwh=message.min_quantity_kwh,
            max_quantity_kwh=message.max_quantity_kwh,
            mean_quantity_kwh=message.mean_quantity_kwh,
            reading_count=message.reading_count,
            raw=message,
            group=dict(message.group),
            series_count=message.series_count,
            expected_reading_count=message.expected_reading_count,
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded query; start_time and end_time are None where the query was unbounded.

    A query of one series has its series_id; a query over a selector has an empty series_id
    and the selector's selector_series_ids and selector_labels, as far as the entry kept them:
    selector_truncated says when ids or labels were left out (how many: omitted_series_ids,
    omitted_labels) or cut. group_by is the query's.
    """

    query_time: datetime
    caller_name: str
    series_id: str
    granularity: str
    start_time: datetime | None
    end_time: datetime | None
    time_zone: str
    page_size: int
    continued_page: bool
    bucket_count: int
    raw: pb.QueryHistoryEntry = field(repr=False, compare=False)
    selector_series_ids: tuple[str, ...] = ()
    selector_labels: dict[str, str] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    selector_truncated: bool = False
    omitted_series_ids: int = 0
    omitted_labels: int = 0

    @classmethod
    def from_message(cls, message: pb.QueryHistoryEntry) -> "HistoryEntry":
        return cls(
            query_time=_utc(message.query_time),
            caller_name=message.caller_name,
            series_id=message.series_id,
            granularity=granularity_name(message.granularity),
            start_time=_utc(message.start_time) if message.HasField("start_time") else None,
            end_time=_utc(message.end_time) if message.HasField("end_time") else None,
            time_zone=message.time_zone,
            page_size=message.page_size,
            continued_page=message.continued_page,
            bucket_count=message.bucket_count,
            raw=message,
            selector_series_ids=tuple(message.selector.series_ids),
            selector_labels=dict(message.selector.labels),
            group_by=tuple(message.group_by),
            selector_truncated=message.selector_truncated,
            omitted_series_ids=message.omitted_series_id_count,
            omitted_labels=message.omitted_label_count,
        )


@dataclass(frozen=True, slots=True)
class Series:
    """A series of the catalog. reading_interval is None where none is declared; the reading
    times are None while the series holds no reading."""

    series_id: str
    labels: dict[str, str]
    reading_interval: timedelta | None
    first_reading_time: datetime | None
    last_reading_time: datetime | None
    reading_count: int
    raw: pb.Series = field(repr=False, compare=False)

    @classmethod
    def from_message(cls, message: pb.Series) -> "Series":
        return cls(
            series_id=message.series_id,
            labels=dict(message.labels),
            reading_interval=(
                message.reading_interval.ToTimedelta() if message.HasField("reading_interval") else None
            ),
            first_reading_time=(
                _utc(message.first_reading_time) if message.HasField("first_reading_time") else None
            ),
            last_reading_time=(
                _utc(message.last_reading_time) if message.HasField("last_reading_time") else None
            ),
            reading_count=message.reading_count,
            raw=message,
        )
