"""The benchmark scripts, run small on the test server, so that `make bench` keeps working on
every engine CI tests. The figures themselves are not judged here (timing belongs to the
benchmarks); what is checked is that every section ran, on the engine it says, and that each
figure and ratio is a measured number. The report is checked on small kept figures of its own.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import (
    REPOSITORY,
    RESULTS_FOLDER,
    Results,
    Row,
    publish,
    reporting_folder,
    shown_command,
    write_engine_results,
    write_report,
)
from timeseries_aggregation.storage.database import Database
from timeseries_aggregation.storage.schema import migration_scripts

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Small enough for seconds per engine; every section runs.
SMALL_BENCH = [
    "--readings=20000",
    "--message-sizes=1000,20000",
    "--memory-readings=20000",
    "--query-iterations=5",
    "--growth=1",
    "--storage-meters=4",
    "--storage-days=2",
    "--portfolio-meters=3",
    "--portfolio-iterations=2",
    "--concurrency-seconds=0.5",
    "--pages-days=3",
    "--pages-iterations=2",
    "--concurrency-bulk-readings=20000",
    "--tracing-iterations=10",
    "--rollup-meters=2",
    "--rollup-days=2",
    "--rollup-query-days=40",
    "--rollup-iterations=2",
]


def run_script(script: str, arguments: list[str]) -> str:
    """Run a bench script to its end; its standard output."""
    completed = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return completed.stdout


def measured_numbers(text: str) -> list[float]:
    return [float(number.replace(",", "")) for number in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


async def test_the_benchmark_measures_every_section_on_the_test_engine(
    postgres_url: str, database: Database, tmp_path: Path
) -> None:
    # The bench's database is migrated on the same server as this one, so it can do the same.
    capabilities = database.capabilities
    compressed = capabilities.compression
    arguments = [*SMALL_BENCH, f"--database-url={postgres_url}", f"--results-folder={tmp_path / 'results'}"]
    run_script("bench.py", [*arguments, "--compressed"] if compressed else arguments)

    [kept] = (tmp_path / "results").glob("*.json")
    record = json.loads(kept.read_text())
    if capabilities.distributed:
        expected_engine = "citus"
    elif not capabilities.hypertables:
        expected_engine = "postgresql"
    else:
        expected_engine = "timescaledb-compressed" if compressed else "timescaledb"
    assert record["engine"] == expected_engine
    assert "URL" in record["command"]
    assert postgres_url not in record["command"]
    summaries = {row["summary"]: row for row in record["rows"] if row["summary"]}
    assert set(summaries) == {
        "ingest, raw COPY",
        "ingest via the service, best message size",
        "query daily, one meter's year among 100 meters: p50 / p99",
        "query monthly, one meter's year among 100 meters: p50 / p99",
        "portfolio daily totals, 3 meters x 30 days, all together: p50 / p99",
        "portfolio daily totals, 3 meters x 30 days, per site (10 groups): p50 / p99",
        "storage, bytes per reading",
        "ingest of minute readings with rollups",
        "minute readings, days of a year in Berlin: p50 / p99",
        "minute readings, months of a year in Berlin: p50 / p99",
        "tracing every call: daily query p50, traced vs untraced",
    }
    sections = {row["section"] for row in record["rows"]}
    assert sections == {
        "1 ingest ceiling",
        "2 ingest via service",
        "3 memory",
        "4 query",
        "5 concurrency",
        "6 storage",
        "7 portfolio",
        "8 pages",
        "9 rollups",
        "10 tracing",
    }
    # The traced server's spans reached the bench's receiver: 20 warm-up and 10 measured calls.
    [traced] = [row for row in record["rows"] if row["section"] == "10 tracing"]
    spans = re.search(r"([\d,]+) spans received", traced["measurement"])
    assert spans, traced
    assert int(spans.group(1).replace(",", "")) >= 30, traced
    for row in record["rows"]:
        numbers = measured_numbers(row["value"] + row["ceiling"])
        assert numbers, row
        assert all(math.isfinite(number) for number in numbers), row
        if row["ratio"]:
            assert float(row["ratio"]) > 0, row
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Side by side" in report
    assert record["label"] in report


async def test_the_call_path_script_times_every_stage(postgres_url: str) -> None:
    output = run_script("call_path.py", [f"--database-url={postgres_url}", "--iterations=3"])
    stages = re.findall(r"^(\d) .*? (\d+\.\d+) ms +(\d+\.\d+) ms", output, flags=re.MULTILINE)
    assert [stage for stage, _, _ in stages] == ["1", "2", "3", "4", "5", "6"], output
    assert all(float(p50) > 0 and float(p99) >= float(p50) for _, p50, p99 in stages), output
    assert re.search(r"server process: \d+\.\d+ ms of CPU per query", output), output
    assert re.search(r"building the response of 365 buckets: p50 \d+\.\d+ ms", output), output


async def test_the_history_by_caller_script_shows_each_callers_page_read_through_its_index(
    postgres_url: str,
) -> None:
    output = run_script("history_by_caller.py", [f"--database-url={postgres_url}", "--entries=20000"])
    rows = re.findall(r"^\| service's \| (\w+) \| (\w+) \| ([^|]+) \|", output, flags=re.MULTILINE)
    assert len(rows) == 4, output
    assert all("query_history_by_caller" in index for _, _, index in rows), output


async def test_the_migration_scale_script_times_each_migration_after_filling_the_readings(
    postgres_url: str,
) -> None:
    output = run_script(
        "migration_scale.py", [f"--database-url={postgres_url}", "--readings=20000", "--meters=10"]
    )
    assert "- 20,000 readings of 10 meters, written and vacuumed in " in output, output
    timed = re.findall(r"^\| (\d{4}_\w+) \| (\d+\.\d+) \| (\d+) \|$", output, flags=re.MULTILINE)
    assert [version for version, _, _ in timed] == [
        version for version, _ in migration_scripts() if version >= "0007"
    ], output
    assert re.search(r"^\| all of them \| \d+\.\d+ \| \d+ \|$", output, flags=re.MULTILINE), output


async def test_the_scale_run_loads_compresses_and_queries_both_sizes(
    postgres_url: str, database: Database, tmp_path: Path
) -> None:
    if not database.capabilities.compression:
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


def keep(folder: Path, *rows: Row) -> None:
    write_engine_results(Results("postgresql", "PostgreSQL 18", "make bench", rows=list(rows)), folder)


DAILY = "daily, one meter's year: p50 / p99"
ROLLUPS_INGEST = "ingest of minute readings with rollups"


@pytest.mark.any_engine
def test_a_comparison_shows_each_row_before_and_after_and_the_ratio_of_their_figures(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    keep(results, Row("4 query", DAILY, "9.00 ms / 12.00 ms", "3.00 ms / 4.00 ms", "3.00", summary="daily"))
    comparison = results / "comparisons" / "query-path"
    comparison.mkdir(parents=True)
    (comparison / "description.md").write_text("# Query path: one plan\n\nThe plan is rendered once.\n")
    keep(
        comparison / "before",
        Row("4 query", DAILY, "4.00 ms / 6.00 ms", "2.00 ms / 3.00 ms", "2.00", summary="daily"),
        Row("7 portfolio", "rollups rebuilt for 100 meters", "10.0 s"),
        Row("9 rollups", ROLLUPS_INGEST, "800,000 readings/s", "1,000,000 readings/s", "0.80"),
    )
    keep(
        comparison / "after",
        Row("4 query", DAILY, "3.00 ms / 7.00 ms", "2.00 ms / 3.00 ms", "1.50", summary="daily"),
        Row("7 portfolio", "daily totals: p50 / p99", "5.00 ms / 6.00 ms", "50.00 ms / 60.00 ms", "0.10"),
        Row("9 rollups", ROLLUPS_INGEST, "1,000,000 readings/s", "1,000,000 readings/s", "1.00"),
    )

    report = write_report(results).read_text()

    side_by_side = report.split("## Side by side\n")[1].split("\n## ")[0]
    assert [line for line in side_by_side.splitlines() if line.startswith("| daily")] == [
        "| daily | 9.00 ms / 12.00 ms (3.00x) |"
    ]
    section = report.split("## Query path: one plan\n")[1].split("\n## ")[0]
    assert "The plan is rendered once." in section
    assert "### PostgreSQL 18\n" in section
    assert [line for line in section.splitlines() if line.startswith("| ")] == [
        "| section | measurement | before | after | after/before | ratio before | ratio after |",
        f"| 4 query | {DAILY} | 4.00 ms / 6.00 ms | 3.00 ms / 7.00 ms | 0.75 | 2.00 | 1.50 |",
        "| 7 portfolio | rollups rebuilt for 100 meters | 10.0 s |  |  |  |  |",
        "| 7 portfolio | daily totals: p50 / p99 |  | 5.00 ms / 6.00 ms |  |  | 0.10 |",
        f"| 9 rollups | {ROLLUPS_INGEST} | 800,000 readings/s | 1,000,000 readings/s | 1.25 | 0.80 | 1.00 |",
    ]


@pytest.mark.any_engine
def test_a_run_kept_in_a_comparison_rebuilds_the_report_of_the_results_folder_holding_it(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    keep(results, Row("4 query", DAILY, "9.00 ms / 12.00 ms", summary="daily"))
    after = results / "comparisons" / "query-path" / "after"

    publish(
        Results("postgresql", "PostgreSQL 18", "make bench", rows=[Row("4 query", DAILY, "3.00 ms")]), after
    )

    assert (after / "postgresql.json").exists()
    assert not (after.parent / "RESULTS.md").exists()
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| daily | 9.00 ms / 12.00 ms |" in report
    assert f"| 4 query | {DAILY} |  | 3.00 ms |  |  |  |" in report
    # bench/RESULTS.md shows bench/results alone: figures kept beside it rebuild no report.
    assert reporting_folder(RESULTS_FOLDER.parent / "before") is None
    assert reporting_folder(RESULTS_FOLDER / "comparisons" / "query-path" / "before") == RESULTS_FOLDER


@pytest.mark.any_engine
def test_the_command_shown_names_no_database_and_no_folder_of_the_machine(tmp_path: Path) -> None:
    side = REPOSITORY / "bench" / "results" / "comparisons" / "plan" / "before"
    argv = ["--database-url=postgresql://user:secret@host/db", "--results-folder", str(side)]
    assert shown_command("make bench", argv, make_variable="BENCH_ARGS") == (
        'make bench BENCH_ARGS="--database-url=URL --results-folder bench/results/comparisons/plan/before"'
    )
    assert shown_command("bench/scale.py", [f"--results-folder={tmp_path}"]) == (
        "bench/scale.py --results-folder=DIR"
    )
