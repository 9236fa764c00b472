"""TimeseriesAggregationService: turns requests into domain calls and results into responses."""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.domain.aggregation import make_aggregate_query
from timeseries_aggregation.domain.history import visible_caller
from timeseries_aggregation.domain.paging import (
    buckets_next_page_token,
    buckets_page_request,
    group_buckets_next_page_token,
    group_buckets_page_request,
    history_next_page_token,
    history_page_request,
    series_next_page_token,
    series_page_request,
)
from timeseries_aggregation.domain.quotas import KeyLimits
from timeseries_aggregation.errors import InvalidArgumentError, StreamIdleError
from timeseries_aggregation.query_pages import query_portfolio_page, query_series_page
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.deletion import delete_readings
from timeseries_aggregation.storage.query_history import list_history
from timeseries_aggregation.storage.readings import WritePermit, ingest_stream
from timeseries_aggregation.storage.series_catalog import list_series, update_series
from timeseries_aggregation.transport.call_record import current_call
from timeseries_aggregation.transport.convert import (
    GRANULARITY_FROM_PROTO,
    buckets_response,
    decode_ingest_message,
    history_entry_message,
    optional_time,
    reading_count,
    readings_deletion,
    series_message,
    series_selector,
    series_update,
)
from timeseries_aggregation.transport.quotas import KeyQuotas
from timeseries_aggregation.transport.status import Context, map_errors
from timeseries_aggregation.transport.wire import MalformedMessage
from timeseries_aggregation.uncancellable import complete_despite_cancellation
from timeseries_aggregation.wording import counted

logger = logging.getLogger(__name__)

FAIRNESS_INTERVAL_SECONDS = 0.005
INGEST_METHOD = f"/{pb.DESCRIPTOR.services_by_name['TimeseriesAggregationService'].full_name}/IngestReadings"


class TimeseriesAggregationServicer(pb_grpc.TimeseriesAggregationServiceServicer):
    """Implements timeseries.v1.TimeseriesAggregationService on a database.

    Authentication has happened before a method runs (transport.auth); what the methods
    learn for the access log and the metrics goes into the call record.
    """

    def __init__(
        self,
        database: Database,
        stream_idle_timeout_seconds: float,
        stream_max_age_seconds: float = 600.0,
        quotas: KeyQuotas | None = None,
    ) -> None:
        self._database = database
        self._stream_idle_timeout = stream_idle_timeout_seconds
        self._stream_max_age = stream_max_age_seconds
        self._quotas = quotas

    @map_errors
    async def IngestReadings(
        self,
        request_iterator: AsyncIterator[pb.IngestReadingsRequest | MalformedMessage],
        context: Context,
    ) -> pb.IngestReadingsResponse:
        # A stream holds a write connection only from its first full chunk to its end, so the
        # write pool's size bounds the streams writing at once; the others cost only memory
        # (a chunk at most each, within the server's limit of concurrent calls).
        record = current_call()
        async with contextlib.AsyncExitStack() as shares:
            write_permit = await self._key_share(shares, record.caller, record.limits)
            return await self._ingest(request_iterator, context, write_permit)

    async def _key_share(
        self, shares: contextlib.AsyncExitStack, caller: str, limits: KeyLimits | None
    ) -> WritePermit | None:
        """Hold one of the caller's streams for this one; the permit to take one of its write
        connections. None without authentication: there is no key to share among."""
        if self._quotas is None or limits is None:
            return None
        await shares.enter_async_context(self._quotas.ingest_stream(caller, limits, INGEST_METHOD))
        return functools.partial(self._quotas.write_connection, caller, limits, INGEST_METHOD)

    async def _ingest(
        self,
        request_iterator: AsyncIterator[pb.IngestReadingsRequest | MalformedMessage],
        context: Context,
        write_permit: WritePermit | None,
    ) -> pb.IngestReadingsResponse:
        record = current_call()
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        idle_timeout = self._stream_idle_timeout
        # The idle clock restarts only with readings: empty messages are no progress, and would
        # keep a stream (and its write connection) open forever. The maximum age bounds a stream
        # that does send readings, however slowly.
        end_of_age = last_yield + self._stream_max_age
        idle_until = last_yield + idle_timeout
        async with ingest_stream(self._database, write_permit) as writer:
            requests = aiter(request_iterator)
            while True:
                try:
                    async with asyncio.timeout_at(min(idle_until, end_of_age)):
                        request = await anext(requests)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if idle_until < end_of_age:
                        raise StreamIdleError(
                            f"no readings for {idle_timeout:g} s; the stream was rolled back"
                        ) from None
                    raise StreamIdleError(
                        f"the stream was open longer than {self._stream_max_age:g} s and was rolled "
                        f"back; send at most that long's readings per stream"
                    ) from None
                if isinstance(request, MalformedMessage):
                    raise InvalidArgumentError(
                        "request", f"message {record.messages} is not a valid {request.type_name} message"
                    )
                readings = reading_count(request)
                record.count_message(readings)
                if readings:
                    idle_until = loop.time() + idle_timeout
                batch = decode_ingest_message(request, record.messages - 1, writer.readings_received)
                await writer.add(batch)
                # Buffered messages arrive without suspending; let other calls (and the health
                # check) run at least every few milliseconds however fast a client sends.
                if loop.time() - last_yield > FAIRNESS_INTERVAL_SECONDS:
                    await asyncio.sleep(0)
                    last_yield = loop.time()
            await writer.flush()
            # A client that vanished ends the request stream just as one that finished does;
            # its cancellation arrives separately. Let it arrive, and never commit for it.
            await asyncio.sleep(0)
            if context.cancelled() or context.done():
                raise asyncio.CancelledError("the client went away before the stream ended")
            # The cancellation can lag behind the end of the stream by more than a loop turn;
            # sending the response headers goes through the transport, and fails if it is gone.
            try:
                await context.send_initial_metadata(())
            except Exception:
                raise asyncio.CancelledError("the client went away before the stream ended") from None
            # The outcome is decided here, once: from the moment COMMIT is sent, the stream
            # is what the database says, and a cancel or a passing deadline no longer changes
            # it. A client that gave up meanwhile cannot know; re-sending is safe.
            _, record.committed_after_client_left = await complete_despite_cancellation(writer.commit())
        record.rows_written = writer.rows_written
        record.trace_attributes["timeseries.series_count"] = len(writer.series_ids)
        response = pb.IngestReadingsResponse(
            readings_received=writer.readings_received,
            messages_received=record.messages,
            series_count=len(writer.series_ids),
            keys_added=writer.keys_added,
        )
        if writer.keys.count is not None:
            response.keys_written = writer.keys.count
        return response

    @map_errors
    async def QueryAggregates(
        self, request: pb.QueryAggregatesRequest, context: Context
    ) -> pb.QueryAggregatesResponse:
        query = make_aggregate_query(
            series_id=request.series_id,
            granularity=GRANULARITY_FROM_PROTO.get(request.granularity),
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
            time_zone=request.time_zone,
            selector=series_selector(request.selector) if request.HasField("selector") else None,
            group_by=list(request.group_by),
            include_empty_buckets=request.include_empty_buckets,
        )
        record = current_call()
        caller = record.caller
        record.trace_attributes["timeseries.granularity"] = query.granularity.name
        if query.selector is None:
            record.trace_attributes["timeseries.series_count"] = 1
        elif query.selector.series_ids is not None:
            record.trace_attributes["timeseries.series_count"] = len(query.selector.series_ids)
        next_token = ""
        if query.is_portfolio:
            group_page_request = group_buckets_page_request(query, request.page_size, request.page_token)
            page = await query_portfolio_page(self._database, query, group_page_request, caller)
            if page.has_more:
                last = page.items[-1]
                last_start = datetime.fromtimestamp(last.start_unix_seconds, tz=UTC)
                next_token = group_buckets_next_page_token(query, last.group, last_start)
            record.trace_attributes["timeseries.bucket_count"] = len(page.items)
            return buckets_response(page.items, next_token, query.group_by)
        page_request = buckets_page_request(query, request.page_size, request.page_token)
        page = await query_series_page(self._database, query, page_request, caller)
        if page.has_more:
            last_start = datetime.fromtimestamp(page.items[-1].start_unix_seconds, tz=UTC)
            next_token = buckets_next_page_token(query, last_start)
        record.trace_attributes["timeseries.bucket_count"] = len(page.items)
        return buckets_response(page.items, next_token)

    @map_errors
    async def ListQueryHistory(
        self, request: pb.ListQueryHistoryRequest, context: Context
    ) -> pb.ListQueryHistoryResponse:
        page_request = history_page_request(request.page_size, request.page_token)
        record = current_call()
        page = await list_history(self._database, page_request, visible_caller(record.caller, record.scopes))
        next_token = history_next_page_token(page.items[-1].id) if page.has_more else ""
        return pb.ListQueryHistoryResponse(
            entries=[history_entry_message(entry) for entry in page.items],
            next_page_token=next_token,
        )

    @map_errors
    async def UpdateSeries(self, request: pb.UpdateSeriesRequest, context: Context) -> pb.Series:
        series = await update_series(self._database, series_update(request))
        return series_message(series)

    @map_errors
    async def ListSeries(self, request: pb.ListSeriesRequest, context: Context) -> pb.ListSeriesResponse:
        selector = series_selector(request.selector)
        page_request = series_page_request(selector, request.page_size, request.page_token)
        page = await list_series(self._database, selector, page_request)
        next_token = series_next_page_token(selector, page.items[-1].series_id) if page.has_more else ""
        return pb.ListSeriesResponse(
            series=[series_message(series) for series in page.items], next_page_token=next_token
        )

    @map_errors
    async def DeleteReadings(
        self, request: pb.DeleteReadingsRequest, context: Context
    ) -> pb.DeleteReadingsResponse:
        deletion = readings_deletion(request)
        outcome = await delete_readings(self._database, deletion)
        selector = deletion.selector
        # Who removed what, for the audit trail: the key's name, never the key.
        logger.info(
            "deleted %s of %s in [%s, %s) for %r (selector: series_ids %s, labels %s)",
            counted(outcome.deleted_count, "reading"),
            counted(outcome.series_count, "series", "series"),
            deletion.start_time.isoformat(),
            deletion.end_time.isoformat(),
            current_call().caller,
            list(selector.series_ids) if selector.series_ids is not None else "any",
            selector.labels or "any",
            extra={
                "deleted_count": outcome.deleted_count,
                "series_count": outcome.series_count,
                "caller": current_call().caller,
            },
        )
        return pb.DeleteReadingsResponse(
            deleted_count=outcome.deleted_count, series_count=outcome.series_count
        )
