"""The command-line client against a real server: import, query and history in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from tests.support import EXAMPLE_XLSX
from timeseries_aggregation.app import RunningServer
from timeseries_aggregation.cli import EXIT_BAD_FILE, EXIT_CALL_FAILED, EXIT_USAGE, main


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The CLI uses blocking gRPC calls; run it off the loop that serves them.
    exit_code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


@pytest.fixture
async def loaded(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> str:
    """The example file imported as series meter-7; returns the --target value."""
    target = f"127.0.0.1:{server.port}"
    code, out, err = await run_cli(
        capsys, "import", str(EXAMPLE_XLSX), "--series-id", "meter-7", "--target", target
    )
    assert code == 0
    assert out.startswith("stored 8760 readings of series 'meter-7' in 2 messages, ")
    assert "readings/s" in out
    assert "8760/8760" in err  # the progress bar ran to the end
    return target


OCTOBER_1_TO_4 = (
    "--series-id",
    "meter-7",
    "--granularity",
    "daily",
    "--from",
    "2025-10-01",
    "--to",
    "2025-10-04",
)


async def test_query_table(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", "monthly",
        "--from", "2025-10-01", "--to", "2025-10-23", "--target", loaded,
    )  # fmt: skip
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == [
        "period", "start_time", "end_time", "total_kwh", "min_kwh", "max_kwh", "mean_kwh", "readings",
    ]  # fmt: skip
    assert row.split() == [
        "2025-10", "2025-10-01T00:00:00Z", "2025-11-01T00:00:00Z",
        "4,968,000.000", "9,000.000", "9,000.000", "9,000.000", "552",
    ]  # fmt: skip
    assert len(header) == len(row)  # columns are aligned


async def test_query_csv_and_json(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_cli(
        capsys, "query", *OCTOBER_1_TO_4, "--format", "csv", "--page-size", "3", "--target", loaded
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["period"], row["total_kwh"], row["readings"]) for row in rows] == [
        (f"2025-10-0{day}", "216000.0", "24") for day in range(1, 5)
    ]
    assert rows[0]["start_time"] == "2025-10-01T00:00:00Z"

    code, out, _ = await run_cli(capsys, "query", *OCTOBER_1_TO_4, "--format", "json", "--target", loaded)
    assert code == 0
    buckets = json.loads(out)
    assert buckets[0] == {
        "period": "2025-10-01",
        "start_time": "2025-10-01T00:00:00Z",
        "end_time": "2025-10-02T00:00:00Z",
        "total_kwh": 216000.0,
        "min_kwh": 9000.0,
        "max_kwh": 9000.0,
        "mean_kwh": 9000.0,
        "readings": 24,
    }
    assert len(buckets) == 4


async def test_query_chart(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_cli(capsys, "query", *OCTOBER_1_TO_4, "--chart", "--target", loaded)
    assert code == 0
    assert "meter-7: daily kWh (UTC)" in out
    assert "2025-10-01" in out
    assert "216000" in out.replace(",", "").replace(".0", "")
    assert len(out.splitlines()) >= 20


async def test_query_in_a_time_zone_uses_local_dates(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", "daily", "--time-zone", "Europe/Berlin",
        "--from", "2025-10-26", "--to", "2025-10-26", "--format", "json", "--target", loaded,
    )  # fmt: skip
    assert code == 0
    [bucket] = json.loads(out)
    assert (bucket["period"], bucket["total_kwh"], bucket["readings"]) == ("2025-10-26", 225000.0, 25)
    assert bucket["start_time"] == "2025-10-25T22:00:00Z"


async def test_history_in_every_format(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    await run_cli(capsys, "query", *OCTOBER_1_TO_4, "--page-size", "3", "--target", loaded)
    await run_cli(capsys, "query", "--series-id", "meter-7", "--granularity", "monthly", "--target", loaded)
    code, out, _ = await run_cli(capsys, "history", "--target", loaded)
    assert code == 0
    table = out.splitlines()
    assert table[0].split() == [
        "ran_at",
        "caller",
        "series_id",
        "granularity",
        "start_time",
        "end_time",
        "time_zone",
        "buckets",
    ]
    assert [line.split()[1:3] for line in table[1:]] == [
        ["meter-7", "monthly"],
        ["meter-7", "day_of_month"],
        ["meter-7", "day_of_month"],
    ]
    code, out, _ = await run_cli(capsys, "history", "--limit", "2", "--format", "json", "--target", loaded)
    entries = json.loads(out)
    assert [(e["granularity"], e["buckets"], e["start_time"]) for e in entries] == [
        ("monthly", 12, ""),
        ("day_of_month", 1, "2025-10-01T00:00:00Z"),
    ]
    code, out, _ = await run_cli(capsys, "history", "--limit", "1", "--format", "csv", "--target", loaded)
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["series_id"], row["granularity"], row["time_zone"]) == ("meter-7", "monthly", "UTC")


async def test_errors_are_one_line_with_distinct_exit_codes(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    code, _, err = await run_cli(
        capsys, "query", "--series-id", "", "--granularity", "daily", "--target", target
    )
    assert code == EXIT_CALL_FAILED
    assert err.strip() == "error: query failed: series_id: must not be empty (INVALID_ARGUMENT)"

    bad = tmp_path / "bad.csv"
    bad.write_text("Time (UTC),Quantity kWh\n2025-01-01T00:00:00,1\n2025-01-01T01:00:00,lots\n")
    code, _, err = await run_cli(capsys, "import", str(bad), "--series-id", "m", "--target", target)
    assert code == EXIT_BAD_FILE
    assert err.splitlines()[-1] == "error: row 3: Quantity kWh 'lots' is not a number; nothing was stored"
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "m", "--granularity", "daily", "--format", "csv", "--target", target
    )
    assert code == 0
    assert out.splitlines()[1:] == []  # the failed import stored nothing

    code, _, err = await run_cli(capsys, "import", str(tmp_path / "missing.xlsx"), "--series-id", "m")
    assert code == EXIT_BAD_FILE
    assert "no such file" in err

    code, _, err = await run_cli(capsys, "history", "--target", "127.0.0.1:1", "--timeout", "2")
    assert code == EXIT_CALL_FAILED
    assert "(UNAVAILABLE); is the server running and reachable at 127.0.0.1:1?" in err

    code, _, err = await run_cli(
        capsys,
        "query",
        "--series-id",
        "m",
        "--granularity",
        "daily",
        "--time-zone",
        "Nowhere/City",
        "--from",
        "2025-01-01",
        "--target",
        target,
    )
    assert code == EXIT_USAGE
    assert "--time-zone" in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["query", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "--format csv" in out
    with pytest.raises(SystemExit) as exited:
        main(["query"])
    assert exited.value.code == EXIT_USAGE
