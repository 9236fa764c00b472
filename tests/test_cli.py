"""The command-line client against a real server: import, query and history."""

import asyncio
from pathlib import Path

import pytest

from tests.support import EXAMPLE_XLSX
from timeseries_aggregation.app import RunningServer
from timeseries_aggregation.cli import main


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The CLI uses blocking gRPC calls; run it off the loop that serves them.
    exit_code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


async def test_import_query_and_history(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{server.port}"
    code, out, _ = await run_cli(
        capsys, "import", str(EXAMPLE_XLSX), "--series-id", "meter-7", "--target", target
    )
    assert code == 0
    assert "stored 8760 readings of series 'meter-7' in 2 messages" in out

    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", "monthly",
        "--from", "2025-10-01", "--to", "2025-10-23", "--target", target,
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "period",
        "total",
        "kWh",
        "min",
        "kWh",
        "max",
        "kWh",
        "mean",
        "kWh",
        "readings",
    ]
    assert lines[1].split() == ["2025-10", "4,968,000.000", "9,000.000", "9,000.000", "9,000.000", "552"]

    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", "daily",
        "--from", "2025-10-01", "--to", "2025-10-04", "--page-size", "3", "--target", target,
    )  # fmt: skip
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("2025-10-01", "216,000.000"),
        ("2025-10-02", "216,000.000"),
        ("2025-10-03", "216,000.000"),
        ("2025-10-04", "216,000.000"),
    ]

    code, out, _ = await run_cli(capsys, "history", "--target", target)
    assert code == 0
    history = out.splitlines()[1:]
    # Newest first: the two pages of the daily query, then the monthly one.
    assert [line.split()[2] for line in history] == ["day_of_month", "day_of_month", "monthly"]
    assert all(" meter-7 " in line for line in history)


async def test_query_in_a_time_zone_uses_local_dates(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    await run_cli(capsys, "import", str(EXAMPLE_XLSX), "--series-id", "m", "--target", target)
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "m", "--granularity", "daily", "--time-zone", "Europe/Berlin",
        "--from", "2025-10-26", "--to", "2025-10-26", "--target", target,
    )  # fmt: skip
    assert code == 0
    [row] = [line.split() for line in out.splitlines()[1:]]
    assert (row[0], row[1], row[-1]) == ("2025-10-26", "225,000.000", "25")


async def test_errors_are_reported_with_the_status_and_field(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    code, _, err = await run_cli(
        capsys, "query", "--series-id", "", "--granularity", "daily", "--target", target
    )
    assert code == 1
    assert "INVALID_ARGUMENT" in err
    assert "series_id" in err

    bad = tmp_path / "bad.csv"
    bad.write_text("Time (UTC),Quantity kWh\n2025-01-01T00:00:00,1\n2025-01-01T01:00:00,lots\n")
    code, _, err = await run_cli(capsys, "import", str(bad), "--series-id", "m", "--target", target)
    assert code == 1
    assert "row 3" in err
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "m", "--granularity", "daily", "--target", target
    )
    assert code == 0
    assert out.splitlines()[1:] == []  # the failed import stored nothing

    code, _, err = await run_cli(capsys, "import", str(tmp_path / "missing.xlsx"), "--series-id", "m")
    assert code == 2
    assert "no such file" in err
