"""Output: the rows of buckets, history and series as a table, CSV or JSON, and their numbers."""

import csv
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from timeseries_aggregation.client import (
    Bucket,
    HistoryEntry,
    Series,
)
from timeseries_aggregation.domain.durations import format_duration
from timeseries_aggregation.wording import counted


def timestamp_text(moment: datetime) -> str:
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


def bucket_columns(
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


def bucket_row(bucket: Bucket, group_by: Sequence[str], output_format: str) -> dict[str, object]:
    """Every column a bucket can fill; bucket_columns picks those a query shows."""
    completeness = bucket.completeness
    # None where nothing is expected: '-' in a table, null in JSON, an empty cell in CSV.
    coverage = (
        f"{completeness:.1%}" if output_format == "table" and completeness is not None else completeness
    )
    return {
        GROUP_OBJECT: {key: bucket.group[key] for key in group_by},
        **{_group_column(key): bucket.group[key] for key in group_by},
        "period": bucket.period,
        "start_time": timestamp_text(bucket.start_time),
        "end_time": timestamp_text(bucket.end_time),
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


def selector_text(series_ids: Sequence[str], labels: Mapping[str, str]) -> str:
    """'m1,m2', 'site=berlin-01' or 'm1,m2 site=berlin-01': the series ids and labels that select."""
    return " ".join(part for part in (",".join(series_ids), _labels_text(labels)) if part)


def _queried_series(entry: HistoryEntry) -> str:
    """What a recorded query aggregated: its series_id or its selector, and ' by KEY,...' when
    it grouped; a query of one series without groups shows its series_id alone, as ever."""
    series = entry.series_id or selector_text(entry.selector_series_ids, entry.selector_labels)
    left_out = [
        counted(number, f"more {what}", f"more {plural}")
        for number, what, plural in (
            (entry.omitted_series_ids, "series id", "series ids"),
            (entry.omitted_labels, "label", "labels"),
        )
        if number
    ]
    if left_out:
        series += f" (and {', '.join(left_out)})"
    return f"{series} by {','.join(entry.group_by)}" if entry.group_by else series


def history_row(entry: HistoryEntry) -> dict[str, object]:
    return {
        "ran_at": timestamp_text(entry.query_time),
        "caller": entry.caller_name,
        "series_id": _queried_series(entry),
        "granularity": entry.granularity,
        "start_time": timestamp_text(entry.start_time) if entry.start_time else "",
        "end_time": timestamp_text(entry.end_time) if entry.end_time else "",
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


# A text cell starting with one of these is run as a formula by spreadsheets that open the CSV
# (OWASP's "CSV injection": a series id "=cmd|' /C calc'!A0"); a leading ' makes it plain text.
# Only text cells: numbers are written as numbers, so -3.5 stays a number.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula with ' before it; anything else as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def render(rows: Sequence[dict[str, object]], columns: Sequence[str], output_format: str) -> str:
    if output_format in ("json", "csv"):
        rows = [{column: _meaningful(value) for column, value in row.items()} for row in rows]
    if output_format == "json":
        return json.dumps(list(rows), indent=2)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows({column: _inert(value) for column, value in row.items()} for row in rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[table_cell(row[column]) for column in columns] for row in rows]
    widths = [max([len(title), *(len(line[i]) for line in cells)]) for i, title in enumerate(columns)]
    lines = ["  ".join(title.ljust(width) for title, width in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return "\n".join(lines)


def table_cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


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


def series_row(series: Series, now: datetime, output_format: str) -> dict[str, object]:
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
        "first_reading": timestamp_text(first) if first else None,
        "last_reading": timestamp_text(last) if last else None,
        "readings": series.reading_count,
        "freshness": _age(now - last) if last else None,
    }
