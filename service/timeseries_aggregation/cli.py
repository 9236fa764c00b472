"""The timeseries-aggregation command: run the server, or call it as a client."""

import argparse
import asyncio
import itertools
import logging
import os
import sys
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import grpc
from tqdm import tqdm

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries.v1 import timeseries_aggregation_service_pb2_grpc as pb_grpc
from timeseries_aggregation.client import (
    API_KEY_VARIABLE,
    auth_metadata,
    open_channel,
    series_messages,
)
from timeseries_aggregation.config import ConfigError, load_config
from timeseries_aggregation.domain.api_keys import key_file_line, new_key, parse_scopes
from timeseries_aggregation.readers import ReadingFileError, count_rows, read_rows
from timeseries_aggregation.transport.convert import datetime_to_timestamp

DEFAULT_TARGET = "localhost:50051"
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
GRANULARITIES = {
    "hourly": pb.GRANULARITY_HOURLY,
    "daily": pb.GRANULARITY_DAY_OF_MONTH,
    "monthly": pb.GRANULARITY_MONTHLY,
}


def _serve(arguments: argparse.Namespace) -> int:
    from timeseries_aggregation.app import serve  # the server's imports are not a client's concern

    try:
        config = load_config()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config))
    return 0


def _stub(arguments: argparse.Namespace) -> pb_grpc.TimeseriesAggregationServiceStub:
    channel = open_channel(
        arguments.target,
        tls_ca=arguments.tls_ca,
        tls_cert=arguments.tls_cert,
        tls_key=arguments.tls_key,
    )
    return pb_grpc.TimeseriesAggregationServiceStub(channel)


def _metadata(arguments: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return auth_metadata(arguments.api_key)


def _generate_key(arguments: argparse.Namespace) -> int:
    try:
        scopes = parse_scopes(arguments.scopes)
    except ValueError as error:
        print(f"--scopes: {error}", file=sys.stderr)
        return 2
    key = new_key()
    print(f"API key for {arguments.name} (shown once; give it to the caller, keep it secret):")
    print(f"  {key}")
    print("Line to add to the file named by TIMESERIES_AGGREGATION_API_KEYS_FILE (then send SIGHUP):")
    print(f"  {key_file_line(arguments.name, scopes, key)}")
    return 0


def _ingest_requests(
    path: Path, series_id: str, batch_size: int, on_batch: Callable[[int], object]
) -> Iterator[pb.IngestReadingsRequest]:
    """The file's rows in messages of batch_size readings, in the compact columnar form."""
    rows = read_rows(path)
    while batch := list(itertools.islice(rows, batch_size)):
        times = [(row.time - UNIX_EPOCH) // ONE_MICROSECOND for row in batch]
        yield from series_messages(series_id, times, [row.quantity_kwh for row in batch], batch_size)
        on_batch(len(batch))


def _import(arguments: argparse.Namespace) -> int:
    path: Path = arguments.file
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    stub = _stub(arguments)
    file_errors: list[ReadingFileError] = []

    def requests(on_batch: Callable[[int], object]) -> Iterator[pb.IngestReadingsRequest]:
        # A bad row raises inside gRPC's sending thread, which cancels the call (so the server
        # stores nothing) but reports only UNKNOWN; keep the error to tell the user which row.
        try:
            yield from _ingest_requests(path, arguments.series_id, arguments.batch_size, on_batch)
        except ReadingFileError as error:
            file_errors.append(error)
            raise

    # gRPC logs the cancelled stream's traceback; the message below says all that matters.
    logging.getLogger("grpc._channel").setLevel(logging.CRITICAL)
    with tqdm(total=count_rows(path), unit=" readings", desc=path.name) as progress:
        try:
            response = stub.IngestReadings(
                requests(progress.update), timeout=arguments.timeout, metadata=_metadata(arguments)
            )
        except grpc.RpcError:
            if file_errors:
                raise file_errors[0] from None
            raise
    print(
        f"stored {response.readings_received} readings of series {arguments.series_id!r} "
        f"in {response.messages_received} messages"
    )
    return 0


def _set_range(request: pb.QueryAggregatesRequest, first: date | None, last: date | None) -> None:
    """Inclusive local dates (as the old /query API took them) to a half-open instant range."""
    zone = zoneinfo.ZoneInfo(request.time_zone or "UTC")
    if first is not None:
        request.start_time.CopyFrom(datetime_to_timestamp(datetime.combine(first, time(), zone)))
    if last is not None:
        end = datetime.combine(last + timedelta(days=1), time(), zone)
        request.end_time.CopyFrom(datetime_to_timestamp(end))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(header)]
    print("  ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def _query(arguments: argparse.Namespace) -> int:
    request = pb.QueryAggregatesRequest(
        series_id=arguments.series_id,
        granularity=GRANULARITIES[arguments.granularity],
        time_zone=arguments.time_zone,
        page_size=arguments.page_size,
    )
    try:
        _set_range(request, arguments.date_from, arguments.date_to)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        print(f"--time-zone: {arguments.time_zone!r} is not a known time zone", file=sys.stderr)
        return 2
    stub = _stub(arguments)
    rows: list[list[str]] = []
    while True:
        response = stub.QueryAggregates(request, timeout=arguments.timeout, metadata=_metadata(arguments))
        rows.extend(
            [
                bucket.period,
                f"{bucket.total_quantity_kwh:,.3f}",
                f"{bucket.min_quantity_kwh:,.3f}",
                f"{bucket.max_quantity_kwh:,.3f}",
                f"{bucket.mean_quantity_kwh:,.3f}",
                str(bucket.reading_count),
            ]
            for bucket in response.buckets
        )
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    _print_table(["period", "total kWh", "min kWh", "max kWh", "mean kWh", "readings"], rows)
    return 0


def _history(arguments: argparse.Namespace) -> int:
    stub = _stub(arguments)
    response = stub.ListQueryHistory(
        pb.ListQueryHistoryRequest(page_size=arguments.page_size, page_token=arguments.page_token),
        timeout=arguments.timeout,
        metadata=_metadata(arguments),
    )
    rows = [
        [
            entry.query_time.ToDatetime().isoformat(timespec="seconds") + "Z",
            entry.series_id,
            pb.Granularity.Name(entry.granularity).removeprefix("GRANULARITY_").lower(),
            entry.start_time.ToDatetime().isoformat() + "Z" if entry.HasField("start_time") else "-",
            entry.end_time.ToDatetime().isoformat() + "Z" if entry.HasField("end_time") else "-",
            entry.time_zone,
            str(entry.bucket_count),
        ]
        for entry in response.entries
    ]
    _print_table(["ran at", "series", "granularity", "start", "end", "zone", "buckets"], rows)
    if response.next_page_token:
        print(f"more: --page-token {response.next_page_token}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timeseries-aggregation",
        description="Power-consumption readings in, aggregates out, over gRPC.",
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
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--target", default=DEFAULT_TARGET, help="server HOST:PORT")
        command.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
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
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--series-id", required=True, help="the meter the readings belong to")
    ingest.add_argument("--batch-size", type=int, default=5_000, help="readings per message")
    ingest.set_defaults(run=_import)

    query = client_command("query", help_text="print aggregates of one series")
    query.add_argument("--series-id", required=True)
    query.add_argument("--granularity", choices=sorted(GRANULARITIES), required=True)
    query.add_argument("--from", dest="date_from", type=date.fromisoformat, help="first day, inclusive")
    query.add_argument("--to", dest="date_to", type=date.fromisoformat, help="last day, inclusive")
    query.add_argument("--time-zone", default="UTC", help="IANA zone for buckets and dates")
    query.add_argument("--page-size", type=int, default=0, help="buckets per call (0: default)")
    query.set_defaults(run=_query)

    history = client_command("history", help_text="print the most recent queries")
    history.add_argument("--page-size", type=int, default=0, help="entries (0: 10)")
    history.add_argument("--page-token", default="", help="continue a previous listing")
    history.set_defaults(run=_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        exit_code: int = arguments.run(arguments)
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except ReadingFileError as error:
        print(f"error: {error}; nothing was stored", file=sys.stderr)
        return 1
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
