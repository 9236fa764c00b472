"""AsyncTimeseriesClient: the asyncio Python client, for services built on asyncio."""

import asyncio
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, Unpack, overload

import grpc

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client.channel import DEFAULT_TARGET, open_aio_channel
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

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

Result = TypeVar("Result")


class AsyncTimeseriesClient(ClientSettings):
    """The asyncio twin of TimeseriesClient; create it inside a running event loop.

    >>> async with AsyncTimeseriesClient("localhost:50051", api_key=key) as client:
    ...     await client.ingest(readings)  # any iterable or async iterable
    ...     async for bucket in client.query("meter-1", "monthly"):
    ...         print(bucket.period, bucket.total_quantity_kwh)
    """

    def __init__(self, target: str = DEFAULT_TARGET, **settings: Unpack[ClientOptions]) -> None:
        super().__init__(target, **settings)
        self._channel = open_aio_channel(self._connection)
        self._stub: TimeseriesAggregationServiceAsyncStub = pb_grpc.TimeseriesAggregationServiceStub(
            self._channel
        )

    async def __aenter__(self) -> "AsyncTimeseriesClient":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self,
        attempt: Callable[[], Awaitable[Result]],
        may_retry: Callable[[], bool] = lambda: True,
        retryable: frozenset[grpc.StatusCode] = RETRYABLE,
    ) -> Result:
        delays = self._retry.delays()
        while True:
            try:
                return await attempt()
            except grpc.aio.AioRpcError as error:
                delay = next(delays, None)
                if delay is None or not should_retry(error, retryable) or not may_retry():
                    raise
                await asyncio.sleep(delay)

    async def ingest(
        self, readings: Iterable[ReadingLike] | AsyncIterable[ReadingLike], batch_size: int = 5_000
    ) -> IngestResult:
        """Stream readings in messages of batch_size; all are stored, or none. Retried like
        TimeseriesClient.ingest: sequences fully, other iterables only before they start."""
        check_message_size(batch_size, "batch_size")
        replayable = isinstance(readings, Sequence)
        started = False

        async def messages() -> AsyncIterator[pb.IngestReadingsRequest]:
            nonlocal started
            async for batch in _batches(readings, batch_size):
                started = True
                yield batch_message(batch)

        async def attempt() -> pb.IngestReadingsResponse:
            return await self._stub.IngestReadings(
                messages(), timeout=self._ingest_timeout, metadata=self._metadata
            )

        response = await self._call(attempt, lambda: replayable or not started, INGEST_RETRYABLE)
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
    ) -> AsyncIterator[Bucket]: ...

    @overload
    def query(
        self,
        *,
        granularity: str | int,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        group_by: Sequence[str] = (),
        **options: Unpack[QueryOptions],
    ) -> AsyncIterator[Bucket]: ...

    def query(
        self,
        series_id: str | None = None,
        granularity: str | int | None = None,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        group_by: Sequence[str] = (),
        **options: Unpack[QueryOptions],
    ) -> AsyncIterator[Bucket]:
        """Every bucket of the query, fetching page after page as they are consumed; the
        series and groups are chosen, and mistakes raised before any call, as by
        TimeseriesClient.query."""
        if granularity is None:
            raise TypeError("query() needs a granularity, such as 'daily'")
        request = query_request(
            series_id, granularity, series_ids=series_ids, labels=labels, group_by=group_by, **options
        )
        return self._buckets(request)

    async def _buckets(self, request: pb.QueryAggregatesRequest) -> AsyncIterator[Bucket]:
        while True:
            response = await self._call(
                lambda: self._stub.QueryAggregates(request, timeout=self._timeout, metadata=self._metadata)
            )
            for bucket in response.buckets:
                yield Bucket.from_message(bucket)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def history(self, page_size: int = 0, limit: int | None = None) -> AsyncIterator[HistoryEntry]:
        """Recorded queries, newest first, across pages; at most `limit` of them."""
        request = pb.ListQueryHistoryRequest(page_size=page_size)
        counted = itertools.count()
        while True:
            response = await self._call(
                lambda: self._stub.ListQueryHistory(request, timeout=self._timeout, metadata=self._metadata)
            )
            for entry in response.entries:
                if limit is not None and next(counted) >= limit:
                    return
                yield HistoryEntry.from_message(entry)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def update_series(
        self,
        series_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        reading_interval: timedelta | None = None,
        clear_reading_interval: bool = False,
    ) -> Series:
        """Set what is given and keep the rest, as TimeseriesClient.update_series does."""
        request = update_series_request(series_id, labels, reading_interval, clear_reading_interval)
        response = await self._call(
            lambda: self._stub.UpdateSeries(request, timeout=self._timeout, metadata=self._metadata)
        )
        return Series.from_message(response)

    async def list_series(
        self,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        limit: int | None = None,
    ) -> AsyncIterator[Series]:
        """The series with these ids (when given) that carry every label pair given, ordered by
        series_id, across pages; at most `limit` of them."""
        request = list_series_request(series_ids, labels, page_size)
        listed = itertools.count()
        while True:
            response = await self._call(
                lambda: self._stub.ListSeries(request, timeout=self._timeout, metadata=self._metadata)
            )
            for series in response.series:
                if limit is not None and next(listed) >= limit:
                    return
                yield Series.from_message(series)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def delete_readings(
        self,
        *,
        series_ids: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        start_time: datetime,
        end_time: datetime,
    ) -> int:
        """Delete the readings in [start_time, end_time) of the selected series, all or none, as
        TimeseriesClient.delete_readings does; returns how many readings went."""
        request = delete_readings_request(series_ids, labels, start_time=start_time, end_time=end_time)
        # Retried as the other calls are: a deletion is idempotent (see TimeseriesClient's).
        response = await self._call(
            lambda: self._stub.DeleteReadings(request, timeout=self._timeout, metadata=self._metadata)
        )
        return response.deleted_count


async def _batches(
    readings: Iterable[ReadingLike] | AsyncIterable[ReadingLike], size: int
) -> AsyncIterator[list[ReadingLike]]:
    batch: list[ReadingLike] = []
    if isinstance(readings, AsyncIterable):
        async for reading in readings:
            batch.append(reading)
            if len(batch) == size:
                yield batch
                batch = []
    else:
        for reading in readings:
            batch.append(reading)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch
