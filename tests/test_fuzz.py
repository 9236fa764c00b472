"""Garbage on the wire: random well-typed and random malformed requests never get INTERNAL
(or UNKNOWN), never crash the server, and leave it SERVING."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import SAMPLE_ZONES
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

SERVICE = "/timeseries.v1.TimeseriesAggregationService/"
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
seconds = st.one_of(st.integers(min_value=0, max_value=5_000_000_000), int64)
quantities = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def timestamps(draw: st.DrawFn) -> dict[str, int]:
    return {"seconds": draw(seconds), "nanos": draw(int32)}


@st.composite
def readings(draw: st.DrawFn) -> pb.Reading:
    reading = pb.Reading(series_id=draw(st.one_of(st.just("m1"), text)), quantity_kwh=draw(quantities))
    if draw(st.booleans()):
        stamp = draw(timestamps())
        reading.time.seconds, reading.time.nanos = stamp["seconds"], stamp["nanos"]
    return reading


@st.composite
def series_readings(draw: st.DrawFn) -> pb.SeriesReadings:
    return pb.SeriesReadings(
        series_id=draw(st.one_of(st.just("m1"), text)),
        time_unix_micros=draw(st.lists(st.one_of(st.integers(0, 4_102_444_800_000_000), int64), max_size=20)),
        quantity_kwh=draw(st.lists(quantities, max_size=20)),
    )


@st.composite
def ingest_messages(draw: st.DrawFn) -> list[pb.IngestReadingsRequest]:
    return draw(
        st.lists(
            st.builds(
                pb.IngestReadingsRequest,
                readings=st.lists(readings(), max_size=10),
                series_readings=st.lists(series_readings(), max_size=3),
            ),
            max_size=4,
        )
    )


@st.composite
def queries(draw: st.DrawFn) -> pb.QueryAggregatesRequest:
    request = pb.QueryAggregatesRequest(
        series_id=draw(st.one_of(st.just("m1"), text)),
        granularity=draw(st.integers(min_value=-3, max_value=6)),  # type: ignore[arg-type]
        time_zone=draw(st.one_of(st.sampled_from(["", *SAMPLE_ZONES]), text)),
        page_size=draw(int32),
        page_token=draw(text),
    )
    for field in ("start_time", "end_time"):
        if draw(st.booleans()):
            stamp = draw(timestamps())
            getattr(request, field).seconds = stamp["seconds"]
            getattr(request, field).nanos = stamp["nanos"]
    return request


async def status_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def assert_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        await health.Check(health_pb2.HealthCheckRequest())
    ).status == health_pb2.HealthCheckResponse.SERVING


@FUZZ
@given(messages=ingest_messages())
async def test_random_ingest_streams(
    channel: grpc.aio.Channel, messages: list[pb.IngestReadingsRequest]
) -> None:
    stub: TimeseriesAggregationServiceAsyncStub = pb_grpc.TimeseriesAggregationServiceStub(channel)
    assert await status_of(stub.IngestReadings(iter(messages))) not in SERVER_FAULTS
    await assert_serving(channel)


@FUZZ
@given(request=queries(), history=st.builds(pb.ListQueryHistoryRequest, page_size=int32, page_token=text))
async def test_random_queries(
    channel: grpc.aio.Channel, request: pb.QueryAggregatesRequest, history: pb.ListQueryHistoryRequest
) -> None:
    stub: TimeseriesAggregationServiceAsyncStub = pb_grpc.TimeseriesAggregationServiceStub(channel)
    assert await status_of(stub.QueryAggregates(request)) not in SERVER_FAULTS
    assert await status_of(stub.ListQueryHistory(history)) not in SERVER_FAULTS
    await assert_serving(channel)


@FUZZ
@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=3))
async def test_random_bytes(channel: grpc.aio.Channel, payloads: list[bytes]) -> None:
    ingest: Any = channel.stream_unary(SERVICE + "IngestReadings")
    assert await status_of(ingest(iter(payloads))) not in SERVER_FAULTS
    for method in ("QueryAggregates", "ListQueryHistory"):
        call: Any = channel.unary_unary(SERVICE + method)
        assert await status_of(call(payloads[0])) not in SERVER_FAULTS
    await assert_serving(channel)
