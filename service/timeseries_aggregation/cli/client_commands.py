"""The commands that call the service: query, history, update-series, series and delete."""

import argparse
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from timeseries_aggregation.cli.calls import open_client
from timeseries_aggregation.cli.charts import bar_chart
from timeseries_aggregation.cli.exit_codes import EXIT_CALL_FAILED, EXIT_OK, UsageError
from timeseries_aggregation.cli.ranges import check_range, query_range, range_end, range_start
from timeseries_aggregation.cli.rendering import (
    HISTORY_COLUMNS,
    SERIES_COLUMNS,
    bucket_columns,
    bucket_row,
    history_row,
    render,
    selector_text,
    series_row,
    timestamp_text,
)
from timeseries_aggregation.limits import (
    HISTORY_MAX_PAGE_SIZE,
    SELECTOR_MAX_SERIES_IDS,
    SERIES_MAX_PAGE_SIZE,
)
from timeseries_aggregation.wording import counted


def _range_text(arguments: argparse.Namespace) -> str:
    bounds = [f"from {arguments.date_from}"] if arguments.date_from else []
    bounds += [f"to {arguments.date_to}"] if arguments.date_to else []
    return " ".join(bounds) or "at any time"


def _group_by(keys: Sequence[str] | None) -> list[str]:
    """The --group-by keys in the order given; the service checks what a key may be."""
    group_by: list[str] = []
    for key in keys or ():
        if key in group_by:
            raise UsageError(f"--group-by {key} is given twice")
        group_by.append(key)
    return group_by


def query_command(arguments: argparse.Namespace) -> int:
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
    start, end = query_range(arguments)
    # One --series-id alone is the query of one series it always was; more, or a label, select.
    series_id = series_ids[0] if len(series_ids) == 1 and not labels else None
    with open_client(arguments) as client:
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
            else f"the series of {selector_text(series_ids, labels)}"
        )
        print(f"no readings of {queried} {_range_text(arguments)} ({arguments.time_zone})")
    elif arguments.chart:
        queried = series_id if series_id is not None else selector_text(series_ids, labels)
        title = f"{queried}: {arguments.granularity} kWh ({arguments.time_zone})"
        periods = [bucket.period for bucket in buckets]
        totals = [bucket.total_quantity_kwh for bucket in buckets]
        print(bar_chart(periods, totals, title, shutil.get_terminal_size().columns))
    else:
        columns = bucket_columns(group_by, series_id is None, arguments.coverage, arguments.format)
        rows = [bucket_row(bucket, group_by, arguments.format) for bucket in buckets]
        print(
            render([{column: row[column] for column in columns} for row in rows], columns, arguments.format)
        )
    return EXIT_OK


def history_command(arguments: argparse.Namespace) -> int:
    with open_client(arguments) as client:
        entries = list(
            client.history(page_size=min(arguments.limit, HISTORY_MAX_PAGE_SIZE), limit=arguments.limit)
        )
    print(render([history_row(entry) for entry in entries], HISTORY_COLUMNS, arguments.format))
    return EXIT_OK


def _labels(pairs: Sequence[tuple[str, str]] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in pairs or ():
        if key in labels:
            raise UsageError(f"--label {key} is given twice; a series has one value per label")
        labels[key] = value
    return labels


def update_series_command(arguments: argparse.Namespace) -> int:
    labels = _labels(arguments.labels) if arguments.labels else None
    if arguments.clear_labels:
        labels = {}
    if labels is None and arguments.reading_interval is None and not arguments.clear_reading_interval:
        # The service would read an empty update as 'every field', clearing both.
        raise UsageError(
            "nothing to update: give --label, --clear-labels, --reading-interval or --clear-reading-interval"
        )
    with open_client(arguments) as client:
        series = client.update_series(
            arguments.series_id,
            labels=labels,
            reading_interval=arguments.reading_interval,
            clear_reading_interval=arguments.clear_reading_interval,
        )
    row = series_row(series, datetime.now(UTC), arguments.format)
    print(render([row], SERIES_COLUMNS, arguments.format))
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


def list_series_command(arguments: argparse.Namespace) -> int:
    series_ids, labels = _selector(arguments)
    page_size = arguments.page_size
    if not page_size and arguments.limit is not None:
        page_size = min(arguments.limit, SERIES_MAX_PAGE_SIZE)
    with open_client(arguments) as client:
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
    rows = [series_row(series, now, arguments.format) for series in listed]
    print(render(rows, SERIES_COLUMNS, arguments.format))
    return EXIT_OK


# The series a deletion's confirmation names; it counts the others.
CONFIRMATION_MAX_SERIES = 20


def delete_command(arguments: argparse.Namespace) -> int:
    series_ids, labels = _selector(arguments)
    if not series_ids and not labels:
        raise UsageError("name the series to delete from: give --series-id, --label or both")
    zone = arguments.time_zone
    start, end = range_start(arguments.date_from, zone), range_end(arguments.date_to, zone)
    check_range(arguments, start, end)
    if not arguments.yes and not (sys.stdin is not None and sys.stdin.isatty()):
        # A script must not hang on a question nobody sees.
        raise UsageError("delete asks before it deletes, and stdin is not a terminal: pass --yes")
    span = f"[{timestamp_text(start)}, {timestamp_text(end)})"
    with open_client(arguments) as client:
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
