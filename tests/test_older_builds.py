"""Released builds of this service against today's schema, run as they were released: their code
from the repository's history, unchanged, as a separate server process.

A build from before rollups (f662c15, whose migrations stop at 0009) is the one an operator
found answering wrong beside a newer replica: here it must be refused every write on a database
that today's build migrated, and a database it wrote must upgrade to the same answers.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import zoneinfo
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import asyncpg
import grpc
import pytest

from tests.conftest import server_config
from tests.server_process import free_port, server_env, start, stop, wait_serving
from tests.support import hourly_readings, ingest, query_all_pages, service, ts
from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.app import grpc_server
from timeseries_aggregation.rollup_maintenance import SETTINGS
from timeseries_aggregation.storage.database import open_database

# The last build before rollups: it keeps the series catalog, not the rollups.
BEFORE_ROLLUPS = "f662c15"
REPOSITORY = Path(__file__).resolve().parent.parent
READINGS = hourly_readings("meter-1", "2025-01-01", 24 * 90, 9_000.0)


def _has_history(commit: str) -> bool:
    if shutil.which("git") is None:
        return False
    found = subprocess.run(
        ["git", "-C", str(REPOSITORY), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    return found.returncode == 0


pytestmark = pytest.mark.skipif(
    not _has_history(BEFORE_ROLLUPS),
    reason=f"the repository's history with {BEFORE_ROLLUPS} is not here (a shallow or exported copy)",
)


def _extract(commit: str, into: Path) -> Path:
    """The build's service and generated code, as committed."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", commit, "service", "generated"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@pytest.fixture
async def older_build(
    database_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> AsyncIterator[tuple[int, Path]]:
    """A server of the build before rollups on the test's database: its port and its log."""
    code = await asyncio.to_thread(_extract, BEFORE_ROLLUPS, tmp_path / "build")
    port, log = free_port(), tmp_path / "older.log"
    # Its own code first on the path, ahead of today's installed package.
    environment = server_env(database_url, port) | {
        "PYTHONPATH": f"{code / 'service'}:{code / 'generated'}",
        "TIMESERIES_AGGREGATION_LOG_FORMAT": "text",
    }
    process = start(environment, log)
    cleanup.append(process)
    await wait_serving(port)
    yield port, log
    await stop(process)


async def monthly_totals(stub: object, series_id: str) -> list[tuple[str, float, int]]:
    buckets = await query_all_pages(
        stub,  # type: ignore[arg-type]
        pb.QueryAggregatesRequest(
            series_id=series_id,
            granularity=pb.GRANULARITY_MONTHLY,
            start_time=ts("2025-01-01"),
            end_time=ts("2025-07-01"),
            time_zone="Europe/Berlin",
        ),
    )
    return [(bucket.period, bucket.total_quantity_kwh, bucket.reading_count) for bucket in buckets]


async def test_a_build_before_rollups_is_refused_every_write_on_todays_schema(
    database_url: str, older_build: tuple[int, Path]
) -> None:
    port, log = older_build
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ingest(stub, [pb.IngestReadingsRequest(readings=READINGS[:1000])])
        # That build knows no such refusal: it reports an internal error, and stores nothing.
        assert refused.value.code() == grpc.StatusCode.INTERNAL
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM readings") == 0
    finally:
        await connection.close()
    assert "requires writers of schema contract" in log.read_text()


@pytest.mark.fresh_database
async def test_a_database_a_build_before_rollups_wrote_upgrades_to_the_same_answers(
    database_url: str, older_build: tuple[int, Path]
) -> None:
    port, _ = older_build
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service(channel)
        await ingest(stub, [pb.IngestReadingsRequest(readings=READINGS)])
        before = await monthly_totals(stub, "meter-1")
    # What the months hold, counted with zoneinfo from the readings sent.
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    months = Counter(
        reading.time.ToDatetime(tzinfo=UTC).astimezone(berlin).strftime("%Y-%m") for reading in READINGS
    )
    assert before == [(month, count * 9_000.0, count) for month, count in sorted(months.items())]
    # Today's build migrates the database that build created and wrote, and answers alike.
    async with (
        open_database(database_url, SETTINGS) as database,
        grpc_server(database, server_config()) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        assert await monthly_totals(service(channel), "meter-1") == before
