"""TimeseriesAggregationService: turns requests into domain calls and results into responses."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.domain.aggregation import make_aggregate_query
from timeseries_aggregation.domain.paging import (
    buckets_next_page_token,
    buckets_page_request,
    history_next_page_token,
    history_page_request,
)
from timeseries_aggregation.storage.aggregates import list_history, query_aggregates
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.readings import ingest_transaction
from timeseries_aggregation.transport.convert import (
    GRANULARITY_FROM_PROTO,
    buckets_response,
    decode_ingest_message,
    history_entry_message,
    optional_time,
)
from timeseries_aggregation.transport.status import Context, map_errors

FAIRNESS_INTERVAL_SECONDS = 0.005


class TimeseriesAggregationServicer(pb_grpc.TimeseriesAggregationServiceServicer):
    """Implements timeseries.v1.TimeseriesAggregationService on a database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @map_errors
    async def IngestReadings(
        self,
        request_iterator: AsyncIterator[pb.IngestReadingsRequest],
        context: Context,
    ) -> pb.IngestReadingsResponse:
        messages = 0
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        async with ingest_transaction(self._database) as writer:
            async for request in request_iterator:
                batch = decode_ingest_message(request, messages, writer.readings_received)
                messages += 1
                await writer.add(batch)
                # Buffered messages arrive without suspending; let other calls (and the health
                # check) run at least every few milliseconds however fast a client sends.
                if loop.time() - last_yield > FAIRNESS_INTERVAL_SECONDS:
                    await asyncio.sleep(0)
                    last_yield = loop.time()
        return pb.IngestReadingsResponse(
            readings_received=writer.readings_received,
            messages_received=messages,
            series_count=len(writer.series_ids),
        )

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
        )
        page_request = buckets_page_request(query, request.page_size, request.page_token)
        page = await query_aggregates(self._database, query, page_request)
        next_token = ""
        if page.has_more:
            last_start = datetime.fromtimestamp(page.items[-1].start_unix_seconds, tz=UTC)
            next_token = buckets_next_page_token(query, last_start)
        return buckets_response(page.items, next_token)

    @map_errors
    async def ListQueryHistory(
        self, request: pb.ListQueryHistoryRequest, context: Context
    ) -> pb.ListQueryHistoryResponse:
        page_request = history_page_request(request.page_size, request.page_token)
        page = await list_history(self._database, page_request)
        next_token = history_next_page_token(page.items[-1].id) if page.has_more else ""
        return pb.ListQueryHistoryResponse(
            entries=[history_entry_message(entry) for entry in page.items],
            next_page_token=next_token,
        )
