"""The service as a separate process, as operators run it: start, wait for SERVING, stop."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import eventually

SERVE_COMMAND = [sys.executable, "-m", "timeseries_aggregation", "serve"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(
    env: dict[str, str], log: Path, arguments: Sequence[str] = (), unset: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`timeseries-aggregation serve [arguments]` with env added to this environment and the
    variables named in unset taken out of it, output to log."""
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    with log.open("wb") as output:
        return subprocess.Popen(
            [*SERVE_COMMAND, *arguments],
            env=environment | env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def run_to_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`timeseries-aggregation serve` that is expected to stop by itself: its exit code and output."""
    return await asyncio.to_thread(
        subprocess.run,
        SERVE_COMMAND,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def wait_serving(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> None:
            response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            assert response.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, within=30, interval=0.2)


async def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 30)


def server_env(database_url: str, port: int, **settings: str) -> dict[str, str]:
    """The environment of a server on the database and loopback port, authentication off
    unless settings say otherwise (names without the TIMESERIES_AGGREGATION_ prefix)."""
    return {
        "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
        "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
    } | {f"TIMESERIES_AGGREGATION_{name}": value for name, value in settings.items()}


async def serve_on(
    database_url: str, log: Path, cleanup: list[subprocess.Popen[bytes]], **settings: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A SERVING server process on a free port, authentication off unless settings say
    otherwise (names without the TIMESERIES_AGGREGATION_ prefix); registered for cleanup."""
    port = free_port()
    process = start(server_env(database_url, port, **settings), log)
    cleanup.append(process)
    await wait_serving(port)
    return process, port
