"""Section 10: the daily query through a server that traces every call against one that does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import grpc
from figures import ms, percentile, verdict
from harness import ServiceProcess, cpu_seconds
from otlp_receiver import otlp_receiver
from queries import year_request
from report import Results, Row

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from timeseries.v1.timeseries_aggregation_service_pb2_grpc import (
        TimeseriesAggregationServiceAsyncStub as Stub,
    )


async def tracing_section(results: Results, database_url: str, iterations: int) -> None:
    """The daily query through a server that traces every call (OTLP to a receiver in this
    process, sampling 1.0) against the same query through one that does not, call after call,
    with each server's CPU per query."""
    async with otlp_receiver() as (receiver, receiver_port):
        latencies, cpu = await _traced_and_untraced(database_url, receiver_port, iterations)
    off, on = percentile(latencies["off"], 0.5), percentile(latencies["on"], 0.5)
    results.add(
        Row(
            "10 tracing",
            f"daily query, one meter's year, {iterations} calls each: p50 traced (every call, "
            f"{len(receiver.spans):,} spans received) vs untraced; server CPU per query",
            f"{ms(on)} vs {ms(off)}; "
            f"CPU {1000 * cpu['on'] / iterations:.2f} ms vs {1000 * cpu['off'] / iterations:.2f} ms",
            "",
            f"{on / off:.2f}",
            "p50 <= 1.10",
            verdict(on / off <= 1.10),
            summary="tracing every call: daily query p50, traced vs untraced",
        )
    )


async def _traced_and_untraced(
    database_url: str, receiver_port: int, iterations: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latencies and server CPU seconds of the daily query, interleaved, through a server that
    exports every span to the receiver ("on") and one that does not ("off")."""
    traced_environment = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    servers = {
        "off": ServiceProcess(database_url),
        "on": ServiceProcess(database_url, environment=traced_environment),
    }
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, float] = {}
    try:
        async with AsyncExitStack() as channels:
            stubs: dict[str, Stub] = {}
            for name, server in servers.items():
                await server.wait_serving()
                channel = await channels.enter_async_context(
                    grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
                )
                stubs[name] = pb_grpc.TimeseriesAggregationServiceStub(channel)  # type: ignore[assignment]
            request = year_request("meter-000", pb.GRANULARITY_DAY_OF_MONTH)
            for _ in range(20):  # warm up: connections, prepared statements
                for name, stub in stubs.items():
                    response = await stub.QueryAggregates(request)
                    if len(response.buckets) != 365:
                        raise RuntimeError(f"tracing {name}: {len(response.buckets)} days, not 365")
            before = _server_cpu(servers)
            for iteration in range(iterations):
                # Each goes first every other time, so neither always finds the caches warmer.
                order = ("off", "on") if iteration % 2 == 0 else ("on", "off")
                for name in order:
                    started = time.perf_counter()
                    await stubs[name].QueryAggregates(request)
                    latencies[name].append(time.perf_counter() - started)
            cpu = {name: seconds - before[name] for name, seconds in _server_cpu(servers).items()}
    finally:
        # In a thread: the traced server flushes its last spans to the receiver in this loop.
        for server in servers.values():
            await asyncio.to_thread(server.stop)
    return latencies, cpu


def _server_cpu(servers: Mapping[str, ServiceProcess]) -> dict[str, float]:
    return {name: cpu_seconds(server.process.pid).server for name, server in servers.items()}
