"""The embedded PostgreSQL of `serve`: one server process owns it, and its stop stops it."""

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import free_port, run_to_exit, start, stop, wait_serving
from tests.support import eventually

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


def settings(data_dir: Path, port: int) -> dict[str, str]:
    return {
        "TIMESERIES_AGGREGATION_DATA_DIR": str(data_dir),
        "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
    }


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server running on data_dir, if one is."""
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def stop_postgres(data_dir: Path) -> None:
    """Fast-stop whatever PostgreSQL a test left running on data_dir."""
    pid = postmaster_pid(data_dir)
    if pid is not None:
        os.kill(pid, signal.SIGINT)


@pytest.fixture
def data_dir(cleanup: list[subprocess.Popen[bytes]]) -> Iterator[Path]:
    """A data directory outside pytest's (see new_embedded_postgres()); afterwards the server
    processes are killed, then their database stopped, then the directory deleted."""
    folder = Path(tempfile.mkdtemp(prefix="timeseries-aggregation-embedded-"))
    yield folder
    for process in cleanup:
        if process.poll() is None:
            process.kill()
            process.wait()
    stop_postgres(folder)
    shutil.rmtree(folder, ignore_errors=True)


async def postgres_stopped(data_dir: Path, pid: int) -> None:
    """The server is gone, its pid file with it."""

    async def gone() -> None:
        assert postmaster_pid(data_dir) is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        raise AssertionError(f"PostgreSQL (pid {pid}) is still running")

    await eventually(gone, within=10)


async def test_stopping_stops_the_database_a_killed_server_left_running(
    data_dir: Path, cleanup: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port = free_port()
    killed = start(settings(data_dir, port), tmp_path / "killed.log")
    cleanup.append(killed)
    await wait_serving(port)
    orphan = postmaster_pid(data_dir)
    assert orphan is not None
    killed.send_signal(signal.SIGKILL)
    await asyncio.to_thread(killed.wait, 30)
    assert postmaster_pid(data_dir) == orphan  # a killed server cannot stop its database

    restarted = start(settings(data_dir, port), tmp_path / "restarted.log")
    cleanup.append(restarted)
    await wait_serving(port)
    running = postmaster_pid(data_dir)
    assert running is not None
    assert await stop(restarted) == 0

    await postgres_stopped(data_dir, running)
    assert "stopped embedded PostgreSQL" in (tmp_path / "restarted.log").read_text()


async def test_a_second_server_on_the_same_data_directory_exits_and_leaves_the_database_alone(
    data_dir: Path, cleanup: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port = free_port()
    first = start(settings(data_dir, port), tmp_path / "first.log")
    cleanup.append(first)
    await wait_serving(port)
    database = postmaster_pid(data_dir)
    assert database is not None

    second = await run_to_exit(settings(data_dir, free_port()))

    assert second.returncode == 1
    assert f"the data directory {data_dir} is in use by another server process (pid {first.pid})" in (
        second.stderr
    )
    assert postmaster_pid(data_dir) == database
    await wait_serving(port)
    assert await stop(first) == 0
    await postgres_stopped(data_dir, database)
