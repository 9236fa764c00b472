"""Admission control by class of call, before authentication: probes cannot lock out the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import server_config
from tests.support import KEY_FILE, QUERY, READER, add_series, bearer, eventually, service
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.config import AUTH_API_KEY, Config
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.transport.admission import peer_host

pytestmark = pytest.mark.any_engine

WATCHES = 300


async def serving(database: Database, tmp_path: Path, config: Config) -> AsyncIterator[RunningServer]:
    keys = tmp_path / "keys"
    keys.write_text(KEY_FILE)
    await add_series(database, "m1")
    async with grpc_server(database, config) as running:
        yield running


async def start_watch(health: health_pb2_grpc.HealthStub, calls: list[object]) -> grpc.StatusCode | None:
    """None while the watch stays open (it sent its first status), else the code it ended with."""
    call = health.Watch(health_pb2.HealthCheckRequest())
    calls.append(call)
    try:
        response = await call.read()
    except grpc.aio.AioRpcError as error:
        return error.code()
    if response is grpc.aio.EOF:
        code: grpc.StatusCode = await call.code()
        return code
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    return None


# Defaults: one peer address holds 8 watches. Without that cap (1,000 per peer), the class's
# limit of 64 holds them, and the API's calls and the health checks have limits of their own.
@pytest.mark.parametrize(("per_peer", "held"), [(None, 8), (1_000, 64)])
async def test_idle_health_watches_leave_the_api_and_health_checks_answered(
    database: Database, tmp_path: Path, per_peer: int | None, held: int
) -> None:
    limits = {} if per_peer is None else {"probe_max_calls_per_peer": per_peer}
    config = server_config(auth_mode=AUTH_API_KEY, api_keys_file=tmp_path / "keys", **limits)
    calls: list[object] = []
    async for running in serving(database, tmp_path, config):
        address = f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(address) as flood, grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(flood)
            try:
                outcomes = [await start_watch(health, calls) for _ in range(WATCHES)]
                response = await service(channel).QueryAggregates(QUERY, metadata=bearer(READER), timeout=5)
                assert list(response.buckets) == []
                check = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert check.status == health_pb2.HealthCheckResponse.SERVING
                # The watches over the limits were refused at once, not queued.
                assert outcomes.count(None) == held
                assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == WATCHES - held
            finally:
                for call in calls:
                    call.cancel()  # type: ignore[attr-defined]


async def test_a_watch_ends_cleanly_at_its_maximum_age(database: Database, tmp_path: Path) -> None:
    config = server_config(probe_stream_max_age_seconds=0.3)
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
        first = await call.read()
        assert first is not grpc.aio.EOF
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(
    database: Database, tmp_path: Path
) -> None:
    # The body is bigger than the server accepts: read, it would be RESOURCE_EXHAUSTED.
    config = server_config(
        auth_mode=AUTH_API_KEY, api_keys_file=tmp_path / "keys", max_message_bytes=64 * 1024
    )
    oversized = pb.QueryAggregatesRequest(series_id="m1", time_zone="x" * (1024 * 1024))
    async for running in serving(database, tmp_path, config):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = service(channel)
            for metadata in ((), bearer("tsa_not-a-key")):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.QueryAggregates(oversized, metadata=metadata, timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # A known caller's body is read, and its size checked.
            with pytest.raises(grpc.aio.AioRpcError) as too_big:
                await stub.QueryAggregates(oversized, metadata=bearer(READER), timeout=5)
            assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The handler never ran for the refused calls: no query made it into the history.
            history = await stub.ListQueryHistory(pb.ListQueryHistoryRequest(), metadata=bearer(READER))
            assert list(history.entries) == []


async def test_a_call_over_its_class_limit_is_refused_before_its_body_is_read(database: Database) -> None:
    config = server_config(max_message_bytes=64 * 1024, probe_max_calls_per_peer=1)
    async with (
        grpc_server(database, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        # Read, this request would be refused for its size; it is refused for the peer's limit.
        oversized = health.Watch(health_pb2.HealthCheckRequest(service="x" * (1024 * 1024)), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await oversized.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "one peer address may have at most 1" in (refused.value.details() or "")
        watch.cancel()


def test_peers_count_by_address_not_port() -> None:
    assert peer_host("ipv4:127.0.0.1:50000") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:50000") == "[::1]"
    assert peer_host("unix:/tmp/socket") == "/tmp/socket"


@pytest.mark.parametrize(
    "limit",
    [{"connection_idle_seconds": 1.0}, {"connection_max_age_seconds": 1.0, "stream_max_age_seconds": 1.0}],
)
async def test_idle_and_old_connections_are_closed(database: Database, limit: dict[str, float]) -> None:
    # gRPC's smallest idle time and age is a second.
    async with (
        grpc_server(database, server_config(**limit)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert channel.get_state() == grpc.ChannelConnectivity.READY

        async def went_away() -> None:
            assert channel.get_state() == grpc.ChannelConnectivity.IDLE

        await eventually(went_away, within=10)
