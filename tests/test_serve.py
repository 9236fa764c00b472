"""The `serve` command as an operator runs it: a real process, signals, and secrets kept out of logs."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.server_process import free_port, start, stop, wait_serving

CANARY_PASSWORD = "canary-secret-7f3a"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = (parts.username or "postgres") + ":" + password
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.fixture
def cleanup_dirs() -> Iterator[list[Path]]:
    folders: list[Path] = []
    yield folders
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


async def test_serves_on_a_configured_database_and_never_logs_its_password(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    url_file = tmp_path / "database-url"
    url_file.write_text(with_password(database_url, CANARY_PASSWORD) + "\n")
    process = start(
        {
            "TIMESERIES_AGGREGATION_DATABASE_URL_FILE": str(url_file),
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
            "TIMESERIES_AGGREGATION_LOG_LEVEL": "DEBUG",
        },
        log,
    )
    cleanup.append(process)
    await wait_serving(port)
    assert await stop(process) == 0
    output = log.read_text()
    assert "serving timeseries.v1.TimeseriesAggregationService" in output
    assert CANARY_PASSWORD not in output


async def test_serves_on_an_embedded_database_without_configuration(
    tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], cleanup_dirs: list[Path]
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    data_dir = Path(tempfile.mkdtemp(prefix="timeseries-aggregation-serve-"))  # see new_embedded_postgres()
    cleanup_dirs.append(data_dir)
    process = start(
        {
            "TIMESERIES_AGGREGATION_DATA_DIR": str(data_dir),
            "TIMESERIES_AGGREGATION_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "TIMESERIES_AGGREGATION_AUTH_MODE": "none",
        },
        log,
    )
    cleanup.append(process)
    await wait_serving(port)
    assert (data_dir / "pgdata" / "postmaster.pid").exists()
    assert await stop(process) == 0
    output = log.read_text()
    assert str(data_dir / "pgdata") in output  # the log names where the data lives
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # and the database was stopped


async def test_bad_configuration_exits_with_a_message_naming_the_variable(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "timeseries_aggregation", "serve"],
        env={**os.environ, "TIMESERIES_AGGREGATION_POOL_MAX_SIZE": "many"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TIMESERIES_AGGREGATION_POOL_MAX_SIZE" in result.stderr
