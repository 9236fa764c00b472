"""The Python client of timeseries.v1.TimeseriesAggregationService, blocking and asyncio."""

from timeseries_aggregation.client.aio import AsyncTimeseriesClient
from timeseries_aggregation.client.channel import (
    API_KEY_VARIABLE,
    DEFAULT_TARGET,
    TARGET_VARIABLE,
    Connection,
    InsecureChannelError,
    auth_metadata,
    is_loopback_target,
    open_aio_channel,
    open_channel,
)
from timeseries_aggregation.client.messages import (
    QueryOptions,
    Reading,
    ReadingLike,
    batch_message,
    check_message_size,
    delete_readings_request,
    list_series_request,
    query_request,
    row_messages,
    series_messages,
    unix_micros,
    update_series_request,
)
from timeseries_aggregation.client.results import (
    GRANULARITY_NAMES,
    Bucket,
    HistoryEntry,
    IngestResult,
    Series,
    granularity_name,
)
from timeseries_aggregation.client.retry import RetryPolicy
from timeseries_aggregation.client.settings import (
    DEFAULT_INGEST_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    ClientOptions,
)
from timeseries_aggregation.client.sync import TimeseriesClient

__all__ = [
    "API_KEY_VARIABLE",
    "DEFAULT_INGEST_TIMEOUT_SECONDS",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_SECONDS",
    "GRANULARITY_NAMES",
    "TARGET_VARIABLE",
    "AsyncTimeseriesClient",
    "Bucket",
    "ClientOptions",
    "Connection",
    "HistoryEntry",
    "IngestResult",
    "InsecureChannelError",
    "QueryOptions",
    "Reading",
    "ReadingLike",
    "RetryPolicy",
    "Series",
    "TimeseriesClient",
    "auth_metadata",
    "batch_message",
    "check_message_size",
    "delete_readings_request",
    "granularity_name",
    "is_loopback_target",
    "list_series_request",
    "open_aio_channel",
    "open_channel",
    "query_request",
    "row_messages",
    "series_messages",
    "unix_micros",
    "update_series_request",
]
