import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    GRANULARITY_HOURLY: _ClassVar[Granularity]
    GRANULARITY_DAY_OF_MONTH: _ClassVar[Granularity]
    GRANULARITY_MONTHLY: _ClassVar[Granularity]
    GRANULARITY_QUARTER_HOURLY: _ClassVar[Granularity]
    GRANULARITY_HALF_HOURLY: _ClassVar[Granularity]
    GRANULARITY_WEEKLY: _ClassVar[Granularity]
    GRANULARITY_QUARTERLY: _ClassVar[Granularity]
    GRANULARITY_YEARLY: _ClassVar[Granularity]
GRANULARITY_UNSPECIFIED: Granularity
GRANULARITY_HOURLY: Granularity
GRANULARITY_DAY_OF_MONTH: Granularity
GRANULARITY_MONTHLY: Granularity
GRANULARITY_QUARTER_HOURLY: Granularity
GRANULARITY_HALF_HOURLY: Granularity
GRANULARITY_WEEKLY: Granularity
GRANULARITY_QUARTERLY: Granularity
GRANULARITY_YEARLY: Granularity

class Series(_message.Message):
    __slots__ = ("series_id", "labels", "reading_interval", "first_reading_time", "last_reading_time", "reading_count")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    READING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FIRST_READING_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_READING_TIME_FIELD_NUMBER: _ClassVar[int]
    READING_COUNT_FIELD_NUMBER: _ClassVar[int]
    series_id: str
    labels: _containers.ScalarMap[str, str]
    reading_interval: _duration_pb2.Duration
    first_reading_time: _timestamp_pb2.Timestamp
    last_reading_time: _timestamp_pb2.Timestamp
    reading_count: int
    def __init__(self, series_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., reading_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., first_reading_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_reading_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reading_count: _Optional[int] = ...) -> None: ...

class SeriesSelector(_message.Message):
    __slots__ = ("series_ids", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERIES_IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    series_ids: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, series_ids: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpdateSeriesRequest(_message.Message):
    __slots__ = ("series", "update_mask")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    series: Series
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, series: _Optional[_Union[Series, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class ListSeriesRequest(_message.Message):
    __slots__ = ("selector", "page_size", "page_token")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    selector: SeriesSelector
    page_size: int
    page_token: str
    def __init__(self, selector: _Optional[_Union[SeriesSelector, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSeriesResponse(_message.Message):
    __slots__ = ("series", "next_page_token")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[Series]
    next_page_token: str
    def __init__(self, series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Reading(_message.Message):
    __slots__ = ("series_id", "time", "quantity_kwh")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KWH_FIELD_NUMBER: _ClassVar[int]
    series_id: str
    time: _timestamp_pb2.Timestamp
    quantity_kwh: float
    def __init__(self, series_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quantity_kwh: _Optional[float] = ...) -> None: ...

class IngestReadingsRequest(_message.Message):
    __slots__ = ("readings", "series_readings")
    READINGS_FIELD_NUMBER: _ClassVar[int]
    SERIES_READINGS_FIELD_NUMBER: _ClassVar[int]
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    series_readings: _containers.RepeatedCompositeFieldContainer[SeriesReadings]
    def __init__(self, readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ..., series_readings: _Optional[_Iterable[_Union[SeriesReadings, _Mapping]]] = ...) -> None: ...

class SeriesReadings(_message.Message):
    __slots__ = ("series_id", "time_unix_micros", "quantity_kwh")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MICROS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_KWH_FIELD_NUMBER: _ClassVar[int]
    series_id: str
    time_unix_micros: _containers.RepeatedScalarFieldContainer[int]
    quantity_kwh: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, series_id: _Optional[str] = ..., time_unix_micros: _Optional[_Iterable[int]] = ..., quantity_kwh: _Optional[_Iterable[float]] = ...) -> None: ...

class IngestReadingsResponse(_message.Message):
    __slots__ = ("readings_received", "messages_received", "series_count", "keys_written", "keys_added")
    READINGS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    KEYS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    KEYS_ADDED_FIELD_NUMBER: _ClassVar[int]
    readings_received: int
    messages_received: int
    series_count: int
    keys_written: int
    keys_added: int
    def __init__(self, readings_received: _Optional[int] = ..., messages_received: _Optional[int] = ..., series_count: _Optional[int] = ..., keys_written: _Optional[int] = ..., keys_added: _Optional[int] = ...) -> None: ...

class QueryAggregatesRequest(_message.Message):
    __slots__ = ("series_id", "granularity", "start_time", "end_time", "time_zone", "page_size", "page_token", "selector", "group_by", "include_empty_buckets")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMPTY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    series_id: str
    granularity: Granularity
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    time_zone: str
    page_size: int
    page_token: str
    selector: SeriesSelector
    group_by: _containers.RepeatedScalarFieldContainer[str]
    include_empty_buckets: bool
    def __init__(self, series_id: _Optional[str] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., selector: _Optional[_Union[SeriesSelector, _Mapping]] = ..., group_by: _Optional[_Iterable[str]] = ..., include_empty_buckets: _Optional[bool] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("start_time", "end_time", "period", "total_quantity_kwh", "min_quantity_kwh", "max_quantity_kwh", "mean_quantity_kwh", "reading_count", "group", "series_count", "expected_reading_count")
    class GroupEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_QUANTITY_KWH_FIELD_NUMBER: _ClassVar[int]
    MIN_QUANTITY_KWH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUANTITY_KWH_FIELD_NUMBER: _ClassVar[int]
    MEAN_QUANTITY_KWH_FIELD_NUMBER: _ClassVar[int]
    READING_COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_READING_COUNT_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    period: str
    total_quantity_kwh: float
    min_quantity_kwh: float
    max_quantity_kwh: float
    mean_quantity_kwh: float
    reading_count: int
    group: _containers.ScalarMap[str, str]
    series_count: int
    expected_reading_count: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period: _Optional[str] = ..., total_quantity_kwh: _Optional[float] = ..., min_quantity_kwh: _Optional[float] = ..., max_quantity_kwh: _Optional[float] = ..., mean_quantity_kwh: _Optional[float] = ..., reading_count: _Optional[int] = ..., group: _Optional[_Mapping[str, str]] = ..., series_count: _Optional[int] = ..., expected_reading_count: _Optional[int] = ...) -> None: ...

class QueryAggregatesResponse(_message.Message):
    __slots__ = ("buckets", "next_page_token")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[Bucket]
    next_page_token: str
    def __init__(self, buckets: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListQueryHistoryRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class QueryHistoryEntry(_message.Message):
    __slots__ = ("id", "query_time", "series_id", "granularity", "start_time", "end_time", "time_zone", "page_size", "continued_page", "bucket_count", "caller_name", "selector", "group_by", "include_empty_buckets", "selector_truncated", "omitted_series_id_count", "omitted_label_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TIME_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_PAGE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    CALLER_NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMPTY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OMITTED_SERIES_ID_COUNT_FIELD_NUMBER: _ClassVar[int]
    OMITTED_LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: int
    query_time: _timestamp_pb2.Timestamp
    series_id: str
    granularity: Granularity
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    time_zone: str
    page_size: int
    continued_page: bool
    bucket_count: int
    caller_name: str
    selector: SeriesSelector
    group_by: _containers.RepeatedScalarFieldContainer[str]
    include_empty_buckets: bool
    selector_truncated: bool
    omitted_series_id_count: int
    omitted_label_count: int
    def __init__(self, id: _Optional[int] = ..., query_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., series_id: _Optional[str] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ..., page_size: _Optional[int] = ..., continued_page: _Optional[bool] = ..., bucket_count: _Optional[int] = ..., caller_name: _Optional[str] = ..., selector: _Optional[_Union[SeriesSelector, _Mapping]] = ..., group_by: _Optional[_Iterable[str]] = ..., include_empty_buckets: _Optional[bool] = ..., selector_truncated: _Optional[bool] = ..., omitted_series_id_count: _Optional[int] = ..., omitted_label_count: _Optional[int] = ...) -> None: ...

class ListQueryHistoryResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[QueryHistoryEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[QueryHistoryEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteReadingsRequest(_message.Message):
    __slots__ = ("selector", "start_time", "end_time")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    selector: SeriesSelector
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, selector: _Optional[_Union[SeriesSelector, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeleteReadingsResponse(_message.Message):
    __slots__ = ("deleted_count", "series_count")
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    series_count: int
    def __init__(self, deleted_count: _Optional[int] = ..., series_count: _Optional[int] = ...) -> None: ...
