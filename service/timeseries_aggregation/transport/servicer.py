"""TimeseriesAggregationService: turns requests into domain calls and results into responses."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.domain.aggregation import make_aggregate_query
from timeseries_aggregation.domain.api_keys import Scope
from timeseries_aggregation.domain.paging import (
    buckets_next_page_token,
    buckets_page_request,
    history_next_page_token,
    history_page_request,
)
from timeseries_aggregation.errors import InvalidArgumentError, ResourceExhaustedError, StreamIdleError
from timeseries_aggregation.storage.aggregates import list_history, query_aggregates
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.readings import ingest_transaction
from timeseries_aggregation.transport.auth import Authenticator
from timeseries_aggregation.transport.convert import (
    GRANULARITY_FROM_PROTO,
    buckets_response,
    decode_ingest_message,
    history_entry_message,
    optional_time,
)
from timeseries_aggregation.transport.status import Context, map_errors
from timeseries_aggregation.transport.wire import MalformedMessage

FAIRNESS_INTERVAL_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How many ingest streams may run at once, and how long one may send nothing."""

    max_concurrent_streams: int = 16
    idle_timeout_seconds: float = 30.0


class TimeseriesAggregationServicer(pb_grpc.TimeseriesAggregationServiceServicer):
    """Implements timeseries.v1.TimeseriesAggregationService on a database."""

    def __init__(
        self,
        database: Database,
        authenticator: Authenticator,
        limits: StreamLimits,
        on_rows_written: Callable[[int], object] = lambda rows: None,
    ) -> None:
        self._database = database
        self._authenticator = authenticator
        self._limits = limits
        self._on_rows_written = on_rows_written
        self._active_streams = 0

    @map_errors
    async def IngestReadings(
        self,
        request_iterator: AsyncIterator[pb.IngestReadingsRequest | MalformedMessage],
        context: Context,
    ) -> pb.IngestReadingsResponse:
        self._authenticator.authorize(context, Scope.INGEST)
        if self._active_streams >= self._limits.max_concurrent_streams:
            raise ResourceExhaustedError(
                f"{self._active_streams} ingest streams are running, the most this server takes; "
                "retry with backoff"
            )
        self._active_streams += 1
        try:
            return await self._ingest(request_iterator, context)
        finally:
            self._active_streams -= 1

    async def _ingest(
        self, request_iterator: AsyncIterator[pb.IngestReadingsRequest | MalformedMessage], context: Context
    ) -> pb.IngestReadingsResponse:
        messages = 0
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        idle_timeout = self._limits.idle_timeout_seconds
        async with ingest_transaction(self._database) as writer:
            requests = aiter(request_iterator)
            while True:
                try:
                    async with asyncio.timeout(idle_timeout):
                        request = await anext(requests)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise StreamIdleError(
                        f"no message for {idle_timeout:g} s; the stream was rolled back"
                    ) from None
                if isinstance(request, MalformedMessage):
                    raise InvalidArgumentError(
                        "request", f"message {messages} is not a valid {request.type_name} message"
                    )
                batch = decode_ingest_message(request, messages, writer.readings_received)
                messages += 1
                await writer.add(batch)
                # Buffered messages arrive without suspending; let other calls (and the health
                # check) run at least every few milliseconds however fast a client sends.
                if loop.time() - last_yield > FAIRNESS_INTERVAL_SECONDS:
                    await asyncio.sleep(0)
                    last_yield = loop.time()
            # A client that vanished ends the request stream just as one that finished does;
            # its cancellation arrives separately. Let it arrive, and never commit for it.
            await asyncio.sleep(0)
            if context.cancelled() or context.done():
                raise asyncio.CancelledError("the client went away before the stream ended")
        self._on_rows_written(writer.rows_written)
        return pb.IngestReadingsResponse(
            readings_received=writer.readings_received,
            messages_received=messages,
            series_count=len(writer.series_ids),
        )

    @map_errors
    async def QueryAggregates(
        self, request: pb.QueryAggregatesRequest, context: Context
    ) -> pb.QueryAggregatesResponse:
        caller = self._authenticator.authorize(context, Scope.QUERY)
        query = make_aggregate_query(
            series_id=request.series_id,
            granularity=GRANULARITY_FROM_PROTO.get(request.granularity),
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
            time_zone=request.time_zone,
        )
        page_request = buckets_page_request(query, request.page_size, request.page_token)
        page = await query_aggregates(self._database, query, page_request, caller)
        next_token = ""
        if page.has_more:
            last_start = datetime.fromtimestamp(page.items[-1].start_unix_seconds, tz=UTC)
            next_token = buckets_next_page_token(query, last_start)
        return buckets_response(page.items, next_token)

    @map_errors
    async def ListQueryHistory(
        self, request: pb.ListQueryHistoryRequest, context: Context
    ) -> pb.ListQueryHistoryResponse:
        self._authenticator.authorize(context, Scope.QUERY)
        page_request = history_page_request(request.page_size, request.page_token)
        page = await list_history(self._database, page_request)
        next_token = history_next_page_token(page.items[-1].id) if page.has_more else ""
        return pb.ListQueryHistoryResponse(
            entries=[history_entry_message(entry) for entry in page.items],
            next_page_token=next_token,
        )
