"""TimeseriesClient: the blocking Python client, for scripts and threaded services."""

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TypeVar, Unpack, overload

import grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client.channel import DEFAULT_TARGET, open_channel
from timeseries_aggregation.client.messages import (
    QueryOptions,
    ReadingLike,
    batch_message,
    check_message_size,
    delete_readings_request,
    list_series_request,
    query_request,
    update_series_request,
)
from timeseries_aggregation.client.results import Bucket, HistoryEntry, IngestResult, Series
from timeseries_aggregation.client.retry import INGEST_RETRYABLE, RETRYABLE, should_retry
from timeseries_aggregation.client.settings import ClientOptions, ClientSettings

Result = TypeVar("Result")


class TimeseriesClient(ClientSettings):
    """Calls the service with a deadline on every call and retries what is safe to retry.

    >>> with TimeseriesClient("localhost:50051", api_key=key) as client:
    ...     client.ingest([("meter-1", datetime(2025, 10, 1, tzinfo=UTC), 9000.0)])
    ...     for bucket in client.query("meter-1", "daily", time_zone="Europe/Berlin"):
    ...         print(bucket.period, bucket.total_quantity_kwh)
    """

    def __init__(self, target: str = DEFAULT_TARGET, **settings: Unpack[ClientOptions]) -> None:
        super().__init__(target, **settings)
        self._channel = open_channel(self._connection)
        self._stub = pb_grpc.TimeseriesAggregationServiceStub(self._channel)

    def __enter__(self) -> "TimeseriesClient":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self,
        attempt: Callable[[], Result],
        may_retry: Callable[[], bool] = lambda: True,
        retryable: frozenset[grpc.StatusCode] = RETRYABLE,
    ) -> Result:
        delays = self._retry.delays()
        while True:
            try:
                return attempt()
            except grpc.RpcError as error:
                delay = next(delays, None)
                if delay is None or not should_retry(error, retryable) or not may_retry():
                    raise
                time.sleep(delay)

    def ingest(self, readings: Iterable[ReadingLike], batch_size: int = 5_000) -> IngestResult:
        """Stream readings in messages of batch_size; all are stored, or none.

        A sequence (list, tuple) is sent again when a retryable error ends an attempt; any
        other iterable only if the attempt failed before its first reading was taken.
        """
        check_message_size(batch_size, "batch_size")
        return self._stream(
            lambda: (batch_message(batch) for batch in _batches(readings, batch_size)),
            replayable=isinstance(readings, Sequence),
        )

    def ingest_messages(self, messages: Iterable[pb.IngestReadingsRequest]) -> IngestResult:
        """Stream prepared messages as one atomic ingest (retried as `ingest` is)."""
        return self._stream(lambda: messages, replayable=isinstance(messages, Sequence))

    def _stream(
        self, make_messages: Callable[[], Iterable[pb.IngestReadingsRequest]], replayable: bool
    ) -> IngestResult:
        started = False

        def tracked() -> Iterator[pb.IngestReadingsRequest]:
            nonlocal started
            for message in make_messages():
                started = True
                yield message

        def attempt() -> pb.IngestReadingsResponse:
            response: pb.IngestReadingsResponse = self._stub.IngestReadings(
                tracked(), timeout=self._ingest_timeout, metadata=self._metadata
            )
            return response

        response = self._call(attempt, lambda: replayable or not started, INGEST_RETRYABLE)
        return IngestResult.from_message(response)

    @overload
    def query(
        self,
        series_id: str | None,
        granularity: str | int,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        group_by: Sequence[str] = (),
        **options: Unpack[QueryOptions],
    ) -> Iterator[Bucket]: ...

    @overload
    def query(
        self,
        *,
        granularity: str | int,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        group_by: Sequence[str] = (),
        **options: Unpack[QueryOptions],
    ) -> Iterator[Bucket]: ...

    def query(
        self,
        series_id: str | None = None,
        granularity: str | int | None = None,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        group_by: Sequence[str] = (),
        **options: Unpack[QueryOptions],
    ) -> Iterator[Bucket]:
        """Every bucket of the query, fetching page after page as they are consumed.

        The buckets of series_id or, without it, of the series with these series_ids (when
        given) that carry every label pair given, aggregated together. group_by (label keys, or
        'series_id') gives each group of them its own buckets, the groups in the order of their
        values. Exactly one of series_id and series_ids/labels: mistakes raise here, before any
        call (ValueError; TypeError for a missing granularity or a single string as series_ids
        or group_by).
        """
        if granularity is None:
            raise TypeError("query() needs a granularity, such as 'daily'")
        request = query_request(
            series_id, granularity, series_ids=series_ids, labels=labels, group_by=group_by, **options
        )
        return self._buckets(request)

    def _buckets(self, request: pb.QueryAggregatesRequest) -> Iterator[Bucket]:
        while True:
            response: pb.QueryAggregatesResponse = self._call(
                lambda: self._stub.QueryAggregates(request, timeout=self._timeout, metadata=self._metadata)
            )
            yield from map(Bucket.from_message, response.buckets)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def history(self, page_size: int = 0, limit: int | None = None) -> Iterator[HistoryEntry]:
        """Recorded queries, newest first, across pages; at most `limit` of them."""
        request = pb.ListQueryHistoryRequest(page_size=page_size)
        entries = itertools.count()
        while True:
            response: pb.ListQueryHistoryResponse = self._call(
                lambda: self._stub.ListQueryHistory(request, timeout=self._timeout, metadata=self._metadata)
            )
            for entry in response.entries:
                if limit is not None and next(entries) >= limit:
                    return
                yield HistoryEntry.from_message(entry)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def update_series(
        self,
        series_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        reading_interval: timedelta | None = None,
        clear_reading_interval: bool = False,
    ) -> Series:
        """Set what is given and keep the rest; creates the series if the catalog lacks it.

        labels replaces every stored label ({} removes them all); reading_interval is whole
        seconds from 1 s to 1 day; clear_reading_interval removes the declared interval.
        Returns the series as stored.
        """
        request = update_series_request(series_id, labels, reading_interval, clear_reading_interval)
        response: pb.Series = self._call(
            lambda: self._stub.UpdateSeries(request, timeout=self._timeout, metadata=self._metadata)
        )
        return Series.from_message(response)

    def list_series(
        self,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        limit: int | None = None,
    ) -> Iterator[Series]:
        """The series with these ids (when given) that carry every label pair given, ordered by
        series_id, across pages; at most `limit` of them."""
        request = list_series_request(series_ids, labels, page_size)
        listed = itertools.count()
        while True:
            response: pb.ListSeriesResponse = self._call(
                lambda: self._stub.ListSeries(request, timeout=self._timeout, metadata=self._metadata)
            )
            for series in response.series:
                if limit is not None and next(listed) >= limit:
                    return
                yield Series.from_message(series)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def delete_readings(
        self,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        start_time: datetime,
        end_time: datetime,
    ) -> int:
        """Delete the readings in [start_time, end_time) (naive means UTC) of the series with these
        ids (when given) that carry every label pair given; all of them or, on an error, none.

        Needs series_ids or labels (a ValueError otherwise, before any call). Returns how many
        readings went; the series stay in the catalog with their labels.
        """
        request = delete_readings_request(series_ids, labels, start_time=start_time, end_time=end_time)
        # Retried as the other calls are: a deletion is idempotent, so deleting the range again
        # leaves the same state (an attempt that committed but lost its answer makes the count 0).
        response: pb.DeleteReadingsResponse = self._call(
            lambda: self._stub.DeleteReadings(request, timeout=self._timeout, metadata=self._metadata)
        )
        return response.deleted_count


def _batches(readings: Iterable[ReadingLike], size: int) -> Iterator[list[ReadingLike]]:
    iterator = iter(readings)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
