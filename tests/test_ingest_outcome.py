"""An ingest stream's outcome is decided once: what the server reports is what it stored.

Deadlines and cancels that arrive around the end of a stream race the commit. Whatever the
client hears, the server's own account (its access log and metrics) must say OK exactly for
the streams whose readings are stored, and a failure only for streams that left nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

from tests.support import eventually
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import RunningServer
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.uncancellable import complete_despite_cancellation

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import TimeseriesAggregationServiceAsyncStub

READINGS_PER_STREAM = 20_000
STREAMS = 60
ROUNDS = 5
HOUR_MICROS = 3_600_000_000


class AccessLog(logging.Handler):
    """The status of every call, by request id, as the server's access log states it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.status: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.status[record.__dict__["request_id"]] = record.__dict__["status"]


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    handler = AccessLog()
    logger = logging.getLogger("timeseries_aggregation.access")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)


def one_message(series_id: str) -> pb.IngestReadingsRequest:
    start = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
    return pb.IngestReadingsRequest(
        series_readings=[
            pb.SeriesReadings(
                series_id=series_id,
                time_unix_micros=[start + i * HOUR_MICROS for i in range(READINGS_PER_STREAM)],
                quantity_kwh=[1.0] * READINGS_PER_STREAM,
            )
        ]
    )


async def test_the_server_reports_ok_exactly_for_the_streams_it_stored(
    server: RunningServer,
    stub: TimeseriesAggregationServiceAsyncStub,
    database: Database,
    access_log: AccessLog,
) -> None:
    durations = []
    for warm_up in range(3):
        started = time.monotonic()
        await stub.IngestReadings(iter([one_message(f"warm-up-{warm_up}")]))
        durations.append(time.monotonic() - started)
    # Stops are scheduled around the time a stream takes. A busy machine can make every stream
    # of a round slower or faster than the warm-up's, so that all end on one side of the
    # commit: then the next round scales the schedule, until both sides have been hit.
    scale = statistics.median(durations)
    generator = random.Random(20251026)
    client_status: dict[str, grpc.StatusCode] = {}
    for round_number in range(ROUNDS):
        round_status = await stop_streams_at_random(stub, generator, scale, f"stream-{round_number}-")
        client_status |= round_status
        ended_ok = sum(code == grpc.StatusCode.OK for code in round_status.values())
        if 0 < ended_ok < STREAMS:
            break
        scale *= 2.0 if ended_ok == 0 else 0.5

    # A call cancelled before it reached the server is never logged (and stores nothing);
    # every call that did is logged once it has ended.
    async def every_started_call_ended() -> None:
        totals = {"grpc_server_started_total": 0.0, "grpc_server_handled_total": 0.0}
        for metric in server.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name in totals and sample.labels.get("grpc_method") == "IngestReadings":
                    totals[sample.name] += sample.value
        assert totals["grpc_server_started_total"] == totals["grpc_server_handled_total"]

    await eventually(every_started_call_ended)
    async with database.query_connection() as connection:
        rows = await connection.fetch(
            "SELECT series_id, count(*) AS stored FROM readings WHERE series_id LIKE 'stream-%' GROUP BY 1"
        )
    stored = {row["series_id"]: row["stored"] for row in rows}
    server_ok = {series for series, status in access_log.status.items() if status == "OK"}
    mismatched = {
        series: (access_log.status.get(series, "never reached the server"), stored.get(series, 0))
        for series in client_status
        if (series in server_ok) != (stored.get(series, 0) == READINGS_PER_STREAM)
        or stored.get(series, 0) not in (0, READINGS_PER_STREAM)
    }
    assert mismatched == {}
    # The client can hear of a failure for a stream the server committed (it gave up while
    # the commit was in flight), never the other way round.
    heard_ok = {series for series, code in client_status.items() if code == grpc.StatusCode.OK}
    assert {
        series: (access_log.status[series], stored.get(series, 0)) for series in heard_ok - server_ok
    } == {}
    # The schedule really did stop streams on both sides of the commit.
    assert 0 < len(server_ok & set(client_status)) < len(client_status)


async def stop_streams_at_random(
    stub: TimeseriesAggregationServiceAsyncStub, generator: random.Random, scale: float, prefix: str
) -> dict[str, grpc.StatusCode]:
    """STREAMS streams, each stopped by a deadline or a cancel after 0.3 to 1.3 x `scale`
    seconds; what each client heard, by series id (also the call's request id)."""
    client_status: dict[str, grpc.StatusCode] = {}
    for number in range(STREAMS):
        series_id = f"{prefix}{number}"
        after = scale * generator.uniform(0.3, 1.3)
        metadata = (("x-request-id", series_id),)
        if number % 2:
            call = stub.IngestReadings(iter([one_message(series_id)]), timeout=after, metadata=metadata)
        else:
            call = stub.IngestReadings(iter([one_message(series_id)]), metadata=metadata)
            asyncio.get_running_loop().call_later(after, call.cancel)
        try:
            await call
            client_status[series_id] = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            client_status[series_id] = error.code()
        except asyncio.CancelledError:
            client_status[series_id] = grpc.StatusCode.CANCELLED
    return client_status


async def test_work_completes_and_reports_a_cancel_that_arrived_meanwhile() -> None:
    started = asyncio.Event()
    may_finish = asyncio.Event()

    async def work() -> str:
        started.set()
        await may_finish.wait()
        return "done"

    task = asyncio.ensure_future(complete_despite_cancellation(work()))
    await started.wait()
    task.cancel()
    task.cancel()
    may_finish.set()
    assert await task == ("done", True)
    assert task.cancelling() == 0
    may_finish.set()
    assert await complete_despite_cancellation(work()) == ("done", False)
