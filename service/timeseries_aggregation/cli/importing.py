"""The import command: a file's rows read, streamed in messages, and the progress bar."""

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import grpc
from tqdm import tqdm

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb
from timeseries_aggregation.cli.calls import open_client
from timeseries_aggregation.cli.exit_codes import EXIT_BAD_FILE, EXIT_OK, UsageError
from timeseries_aggregation.client import (
    unix_micros,
)
from timeseries_aggregation.readers import (
    QUANTITY_COLUMN,
    SERIES_COLUMN,
    TIME_COLUMN,
    ReadingTable,
    TableOptions,
    open_table,
)
from timeseries_aggregation.wording import counted


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


def import_command(arguments: argparse.Namespace) -> int:
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
        with open_client(arguments) as client, _progress(table) as progress:
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
