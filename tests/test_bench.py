"""The benchmark scripts, run small on the test server, so that `make bench` keeps working on
every engine CI tests. The figures themselves are not judged here (timing belongs to the
benchmarks); what is checked is that every section ran, on the engine it says, and that each
figure and ratio is a measured number.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.databases import CitusCluster

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Small enough for seconds per engine; every section but the concurrency one (a fixed
# million-reading stream) runs.
SMALL_BENCH = [
    "--readings=20000",
    "--message-sizes=1000,20000",
    "--memory-readings=20000",
    "--query-iterations=5",
    "--growth=1",
    "--storage-meters=4",
    "--storage-days=2",
    "--sections=ingest,memory,query,storage",
]


async def compression_available(server_url: str) -> bool:
    """Whether the server is TimescaleDB's community edition, which compresses."""
    connection = await asyncpg.connect(server_url)
    try:
        return bool(
            await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
                " AND current_setting('timescaledb.license', true) = 'timescale'"
            )
        )
    finally:
        await connection.close()


def run_script(script: str, arguments: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]


def measured_numbers(text: str) -> list[float]:
    return [float(number.replace(",", "")) for number in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


async def test_the_benchmark_measures_every_section_on_the_test_engine(
    postgres_url: str, citus_cluster: CitusCluster | None, tmp_path: Path
) -> None:
    compressed = await compression_available(postgres_url)
    arguments = [*SMALL_BENCH, f"--database-url={postgres_url}", f"--results-folder={tmp_path / 'results'}"]
    run_script("bench.py", [*arguments, "--compressed"] if compressed else arguments)

    [kept] = (tmp_path / "results").glob("*.json")
    record = json.loads(kept.read_text())
    expected_engine = "citus" if citus_cluster else "timescaledb-compressed" if compressed else "postgresql"
    assert record["engine"] == expected_engine
    assert "URL" in record["command"]
    assert postgres_url not in record["command"]
    summaries = {row["summary"]: row for row in record["rows"] if row["summary"]}
    assert set(summaries) == {
        "ingest, raw COPY",
        "ingest via the service, best message size",
        "query daily, one meter's year among 100 meters: p50 / p99",
        "query monthly, one meter's year among 100 meters: p50 / p99",
        "storage, bytes per reading",
    }
    sections = {row["section"] for row in record["rows"]}
    assert sections == {"1 ingest ceiling", "2 ingest via service", "3 memory", "4 query", "6 storage"}
    for row in record["rows"]:
        numbers = measured_numbers(row["value"] + row["ceiling"])
        assert numbers, row
        assert all(math.isfinite(number) for number in numbers), row
        if row["ratio"]:
            assert float(row["ratio"]) > 0, row
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Side by side" in report
    assert record["label"] in report


async def test_the_scale_run_loads_compresses_and_queries_both_sizes(
    postgres_url: str, tmp_path: Path
) -> None:
    if not await compression_available(postgres_url):
        pytest.skip("the scale run is about compressed TimescaleDB; this server does not compress")
    run_script(
        "scale.py",
        [
            f"--database-url={postgres_url}",
            f"--results-folder={tmp_path / 'results'}",
            "--meters=4",
            "--small-meters=2",
            "--years=1",
            "--query-iterations=8",
            "--portfolio-iterations=4",
        ],
    )
    record = json.loads((tmp_path / "results" / "scale.json").read_text())
    measurements = [row["measurement"] for row in record["rows"]]
    for meters in (2, 4):
        # A year of quarter-hourly readings per meter, 2023: 365 days of 96.
        loaded = f"{meters} meters: {meters * 365 * 96:,} readings via the service"
        assert any(text.startswith(loaded) for text in measurements), measurements
        assert sum(text.startswith(f"{meters} meters:") for text in measurements) == 6
    growth = [row for row in record["rows"] if row["section"] == "growth"]
    assert len(growth) == 3
    assert all(float(row["ratio"]) > 0 for row in growth)
