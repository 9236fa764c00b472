"""What unauthenticated requests with large bodies cost the server: its resident memory before,
during and after rounds of such calls, each refused UNAUTHENTICATED (or, if the server reads
the body first and it is too big, RESOURCE_EXHAUSTED).

    python -m bench.pre_auth_body [--calls 1,8,32] [--megabytes 16]

Starts `timeseries-aggregation serve` on the embedded PostgreSQL with API keys on, in a
temporary directory, on a loopback port; the server process's RSS is sampled every 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.server_process import free_port, start, wait_serving
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key

MIB = 1024 * 1024


async def sample_peak(process: psutil.Process, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(0.01)
    return peak


async def one_round(
    address: str, process: psutil.Process, calls: int, body_bytes: int, health: bool
) -> tuple[int, int, str]:
    """(peak RSS, RSS after, the codes the calls ended with)."""
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_peak(process, stop))
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TimeseriesAggregationServiceStub(channel)
        probe = health_pb2_grpc.HealthStub(channel)

        async def call() -> None:
            try:
                if health:
                    await probe.Check(health_pb2.HealthCheckRequest(service="x" * body_bytes), timeout=60)
                else:
                    await stub.QueryAggregates(
                        pb.QueryAggregatesRequest(series_id="m1", time_zone="x" * body_bytes), timeout=60
                    )
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(call() for _ in range(calls)))
    await asyncio.sleep(0.5)
    stop.set()
    peak = await sampler
    return peak, process.memory_info().rss, ", ".join(f"{count} {code}" for code, count in codes.items())


async def measure(rounds: list[int], megabytes: int, health: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="pre-auth-body-") as directory:
        keys = Path(directory) / "keys"
        keys.write_text(key_file_line("bench", frozenset({Scope.QUERY}), new_key()) + "\n")
        port = free_port()
        env = {
            "TIMESERIES_AGGREGATION_AUTH_MODE": "api-key",
            "TIMESERIES_AGGREGATION_API_KEYS_FILE": str(keys),
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "TIMESERIES_AGGREGATION_DATA_DIR": directory,
            "TIMESERIES_AGGREGATION_LOG_LEVEL": "WARNING",
        }
        server = start(env, Path(directory) / "server.log")
        try:
            await wait_serving(port)
            process = psutil.Process(server.pid)
            body = megabytes * MIB - 1024  # within the default 16 MiB message limit
            target = "health Check (open to all)" if health else "QueryAggregates without a key"
            print(f"server pid {server.pid}, bodies of {body:,} bytes, {target}")
            print(f"RSS at start: {process.memory_info().rss / MIB:.1f} MiB")
            for calls in rounds:
                before = process.memory_info().rss
                started = time.perf_counter()
                peak, after, codes = await one_round(f"127.0.0.1:{port}", process, calls, body, health)
                print(
                    f"{calls:3d} concurrent calls: RSS before {before / MIB:.1f} MiB, "
                    f"peak {peak / MIB:.1f} MiB (+{(peak - before) / MIB:.1f}), after {after / MIB:.1f} MiB; "
                    f"{codes}; {time.perf_counter() - started:.2f} s"
                )
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", default="1,8,32", help="concurrent calls per round, comma-separated")
    parser.add_argument("--megabytes", type=int, default=16, help="body size in MiB")
    parser.add_argument("--health", action="store_true", help="send health checks instead (no key needed)")
    arguments = parser.parse_args()
    calls = [int(part) for part in arguments.calls.split(",")]
    asyncio.run(measure(calls, arguments.megabytes, arguments.health))


if __name__ == "__main__":
    main()
