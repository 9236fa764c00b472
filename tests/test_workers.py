"""`serve --workers N`: N server processes behind one port, started, signalled and stopped as one."""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import asyncpg
import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.server_process import SERVE_COMMAND, free_port, run_to_exit, server_env, start, stop, wait_serving
from tests.support import (
    ADMIN,
    HISTORY_LABELS,
    KEY_FILE,
    QUERY,
    READER,
    bearer,
    eventually,
    scrape,
    service,
    the_one_error,
)
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.domain.api_keys import Scope, key_file_line
from timeseries_aggregation.storage.schema import migration_scripts

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

WORKERS = 2


def free_port_pair() -> int:
    """A free port whose next port is free too (the second worker's metrics endpoint)."""
    for _ in range(20):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two free consecutive ports")


async def start_workers(
    database_url: str, log: Path, cleanup: list[subprocess.Popen[bytes]], **settings: str
) -> tuple[subprocess.Popen[bytes], int]:
    """`serve --workers 2` on a free port, SERVING; registered for cleanup."""
    port = free_port()
    env = server_env(database_url, port, LOG_FORMAT="json", **settings)
    process = start(env, log, ["--workers", str(WORKERS)])
    cleanup.append(process)
    await wait_serving(port)

    async def all_serving() -> None:
        assert "worker processes sharing the port" in await asyncio.to_thread(log.read_text)

    await eventually(all_serving, within=30)
    return process, port


def workers_of(supervisor: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(supervisor.pid).children()


def log_entries(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def one_call_per_connection(port: int, calls: int) -> None:
    for _ in range(calls):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await pb_grpc.TimeseriesAggregationServiceStub(channel).ListQueryHistory(
                pb.ListQueryHistoryRequest(), timeout=5
            )


# New, so that the migrations run here, in the supervisor alone.
@pytest.mark.fresh_database
async def test_workers_share_the_port_and_each_serves_with_its_own_metrics(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    metrics = free_port_pair()
    supervisor, port = await start_workers(
        database_url, tmp_path / "server.log", cleanup, METRICS_ADDRESS=f"127.0.0.1:{metrics}"
    )
    assert len(workers_of(supervisor)) == WORKERS

    await one_call_per_connection(port, 40)

    # The kernel spreads connections over the workers; each counts its own calls.
    counts = [
        (await scrape(metrics + index)).value("grpc_server_handled_total", **HISTORY_LABELS, grpc_code="OK")
        for index in range(WORKERS)
    ]
    assert sum(counts) == 40
    assert all(count > 0 for count in counts), counts
    # The migrations ran once, in the supervisor; every worker logs with its index.
    entries = log_entries(tmp_path / "server.log")
    migrations = [entry for entry in entries if str(entry["message"]).startswith("applied migration ")]
    assert len(migrations) == len(migration_scripts())
    assert not any("worker" in entry for entry in migrations)
    serving = [
        entry for entry in entries if str(entry["message"]).startswith("serving ") and "worker" in entry
    ]
    assert sorted(int(str(entry["worker"])) for entry in serving) == list(range(WORKERS))
    assert await stop(supervisor) == 0


async def test_an_independent_server_cannot_join_the_workers_port(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    _, port = await start_workers(database_url, tmp_path / "server.log", cleanup)
    second = await run_to_exit(server_env(database_url, port, LOG_FORMAT="json"))
    assert second.returncode == 1
    assert "the port is in use by another process" in the_one_error(second)


async def test_sigterm_reaches_every_worker_which_reports_not_serving_and_exits(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    supervisor, port = await start_workers(
        database_url, tmp_path / "server.log", cleanup, SHUTDOWN_GRACE_SECONDS="5"
    )
    workers = workers_of(supervisor)
    # A health watch on each worker (one connection each, so both get one).
    statuses: list[list[int]] = []

    async def watch() -> None:
        seen: list[int] = []
        statuses.append(seen)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            async for response in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()):
                seen.append(response.status)

    watches = [asyncio.create_task(watch()) for _ in range(8)]

    async def all_watching() -> None:
        assert len(statuses) == 8
        assert all(statuses)

    await eventually(all_watching)
    supervisor.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 30) == 0
    await asyncio.wait_for(asyncio.gather(*watches, return_exceptions=True), 10)
    # Every watch, whichever worker it reached, ended on NOT_SERVING.
    assert all(seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING for seen in statuses), statuses
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)


async def test_a_worker_that_dies_stops_the_server_with_an_error(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    supervisor, _ = await start_workers(database_url, tmp_path / "server.log", cleanup)
    killed, other = workers_of(supervisor)
    killed.kill()
    assert await asyncio.to_thread(supervisor.wait, 30) == 1
    assert not other.is_running()
    errors = [entry["message"] for entry in log_entries(tmp_path / "server.log") if entry["level"] == "ERROR"]
    assert len(errors) == 1
    assert re.fullmatch(r"worker [01] exited \(exit code -9\); stopping the others", str(errors[0]))


async def test_workers_of_a_killed_supervisor_stop_by_themselves(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    supervisor, _ = await start_workers(database_url, tmp_path / "server.log", cleanup)
    workers = workers_of(supervisor)
    supervisor.kill()
    supervisor.wait()

    async def gone() -> None:
        assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)

    await eventually(gone, within=15)


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (["--workers", "0"], {}, "configuration error: --workers: must be from 1 to 64, got 0"),
        (
            [],
            {"TIMESERIES_AGGREGATION_WORKERS": "65"},
            "configuration error: TIMESERIES_AGGREGATION_WORKERS: must be from 1 to 64, got 65",
        ),
    ],
)
async def test_a_worker_count_out_of_range_is_a_configuration_error(
    arguments: list[str], env: dict[str, str], message: str
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [*SERVE_COMMAND, *arguments],
        env={**os.environ, "TIMESERIES_AGGREGATION_AUTH_MODE": "none", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == message


async def test_sighup_reloads_the_keys_of_every_worker(
    database_url: str, sql: asyncpg.Connection, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    await sql.execute("INSERT INTO series (series_id) VALUES ('m1')")  # the series QUERY names
    keys = tmp_path / "keys"
    keys.write_text(key_file_line("reader", frozenset({Scope.QUERY}), READER))
    supervisor, port = await start_workers(
        database_url, tmp_path / "server.log", cleanup, AUTH_MODE="api-key", API_KEYS_FILE=str(keys)
    )
    keys.write_text(KEY_FILE)
    supervisor.send_signal(signal.SIGHUP)

    async def reloaded_by_both() -> None:
        entries = await asyncio.to_thread(log_entries, tmp_path / "server.log")
        reloads = {entry["worker"] for entry in entries if "API keys reloaded" in str(entry["message"])}
        assert reloads == set(range(WORKERS))

    await eventually(reloaded_by_both, within=10)
    # Whichever worker a connection reaches, it takes the new key.
    for _ in range(10):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await service(channel).QueryAggregates(QUERY, metadata=bearer(ADMIN), timeout=5)
    assert await stop(supervisor) == 0
