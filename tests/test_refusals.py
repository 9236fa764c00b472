"""Every refusal counted by reason and method, and logged at a bounded rate."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import server_config
from tests.support import INGESTER, KEY_FILE, QUERY, READER, bearer, metrics_port, scrape, service
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.observability.metrics import ServiceMetrics
from timeseries_aggregation.observability.refusals import Reason, Refusals
from timeseries_aggregation.storage.database import Database

pytestmark = pytest.mark.any_engine

SERVICE = "timeseries.v1.TimeseriesAggregationService"
REFUSED = "timeseries_aggregation_refused_calls_total"


async def test_refusals_are_counted_by_reason_and_method(database: Database, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    config = server_config(
        auth_mode=AUTH_API_KEY,
        api_keys_file=keys,
        metrics_address="127.0.0.1:0",
        key_rate=0.001,
        key_burst=1,
        probe_max_calls_per_peer=1,
    )
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = service(channel)
        # Unauthenticated twice, then a key without the scope; the reader's first call is its
        # burst, its second is over its rate.
        refusals = [
            ((), grpc.StatusCode.UNAUTHENTICATED),
            (bearer("tsa_not-a-key"), grpc.StatusCode.UNAUTHENTICATED),
            (bearer(INGESTER), grpc.StatusCode.PERMISSION_DENIED),
        ]
        await stub.ListQueryHistory(pb.ListQueryHistoryRequest(), metadata=bearer(READER), timeout=5)
        refusals.append((bearer(READER), grpc.StatusCode.RESOURCE_EXHAUSTED))
        for metadata, code in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListQueryHistory(pb.ListQueryHistoryRequest(), metadata=metadata, timeout=5)
            assert refused.value.code() == code
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        await watch.read()
        second = health.Watch(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await second.read()
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.QueryAggregates(QUERY, timeout=5)

        scraped = await scrape(metrics_port(running))
        history = {"grpc_service": SERVICE, "grpc_method": "ListQueryHistory"}
        assert scraped.value(REFUSED, reason="unauthenticated", **history) == 2
        assert scraped.value(REFUSED, reason="permission_denied", **history) == 1
        assert scraped.value(REFUSED, reason="key_rate", **history) == 1
        # Refused before its request is read, a unary call is still counted as one.
        handled = "grpc_server_handled_total"
        assert scraped.value(handled, grpc_type="unary", grpc_code="UNAUTHENTICATED", **history) == 2
        assert (
            scraped.value(
                REFUSED, reason="unauthenticated", grpc_service=SERVICE, grpc_method="QueryAggregates"
            )
            == 1
        )
        assert (
            scraped.value(
                REFUSED,
                reason="probe_streams_per_peer",
                grpc_service="grpc.health.v1.Health",
                grpc_method="Watch",
            )
            == 1
        )
        # Labels name reasons and methods only: never a key's name or a peer.
        labels = {value for (name, pairs) in scraped.samples if name == REFUSED for _, value in pairs}
        assert labels <= {reason.value for reason in Reason} | {
            SERVICE,
            "grpc.health.v1.Health",
            "ListQueryHistory",
            "QueryAggregates",
            "Watch",
        }


async def test_calls_while_no_key_is_in_force_are_counted_apart(database: Database, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys, metrics_address="127.0.0.1:0")
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        keys.write_text("broken")
        await running.reload()  # what SIGHUP does
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service(channel).QueryAggregates(QUERY, metadata=bearer(READER), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        scraped = await scrape(metrics_port(running))
        query = {"grpc_service": SERVICE, "grpc_method": "QueryAggregates"}
        assert scraped.value(REFUSED, reason="keys_unavailable", **query) == 1
        assert scraped.value(REFUSED, reason="unauthenticated", **query) == 0


def test_a_flood_of_refusals_logs_one_line_per_reason_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    refusals = Refusals(ServiceMetrics(), interval_seconds=10.0, clock=lambda: now[0])
    method = f"/{SERVICE}/QueryAggregates"
    with caplog.at_level(logging.WARNING, logger="timeseries_aggregation.observability.refusals"):
        for _ in range(500):
            refusals.record(Reason.UNAUTHENTICATED, method)
        refusals.record(Reason.KEY_RATE, method)
        now[0] += 10.0
        refusals.record(Reason.UNAUTHENTICATED, method)
    since = "for this reason since the last such line"
    assert [record.getMessage() for record in caplog.records] == [
        f"refused a QueryAggregates call (unauthenticated): 1 refusal {since}",
        f"refused a QueryAggregates call (key_rate): 1 refusal {since}",
        f"refused a QueryAggregates call (unauthenticated): 500 refusals {since}",
    ]
