"""Reading (series, time, quantity) rows from the spreadsheets and CSV files bulk loaders have.

A file is a table: a header that names every column, then rows of exactly as many fields.
Columns the import does not read are refused unless the caller names the columns to read, so
that a column nobody looked at (a meter, a decimal comma's second half) cannot be dropped
silently.
"""

import contextlib
import csv
import itertools
import math
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self

from timeseries_aggregation.domain.readings import quantity_problem
from timeseries_aggregation.limits import SERIES_ID_MAX_LENGTH

if TYPE_CHECKING:
    from openpyxl.workbook.workbook import Workbook

TIME_COLUMN = "Time (UTC)"
QUANTITY_COLUMN = "Quantity kWh"
# The column that names each row's series, when a file holds several meters.
SERIES_COLUMN = "Meter"
_BYTE_ORDER_MARK = b"\xef\xbb\xbf"


class ReadingFileError(ValueError):
    """A file's content is not a readings table; the message names the row or column."""


@dataclass(frozen=True, slots=True)
class ReadingRow:
    time: datetime
    quantity_kwh: float
    # From the file's series column; None when the file has none (the caller names the series).
    series_id: str | None = None


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How a CSV file separates its fields and writes the decimals of its numbers."""

    delimiter: str
    decimal_mark: str


# What most software writes, and what spreadsheets set to a European locale write.
COMMA_SEPARATED = CsvLayout(delimiter=",", decimal_mark=".")
SEMICOLON_SEPARATED = CsvLayout(delimiter=";", decimal_mark=",")


@dataclass(frozen=True, slots=True)
class TableOptions:
    """How to read a file. None leaves a choice to the file: the series column is used when
    the header has SERIES_COLUMN, and a CSV header separated by ';' (and holding no ',') means
    SEMICOLON_SEPARATED, any other COMMA_SEPARATED."""

    # The column naming each row's series; when given, the header must have it.
    series_column: str | None = None
    # The columns to read; the header's others are ignored. None: read them all.
    columns: Sequence[str] | None = None
    delimiter: str | None = None
    decimal_mark: str | None = None


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where the columns read are, and how many fields a row must have (None: any, xlsx)."""

    time: int
    quantity: int
    series: int | None
    series_name: str | None


def _cell_name(cell: object) -> str:
    return str(cell).strip() if cell is not None else ""


def _find_columns(names: list[str], options: TableOptions, source: str) -> _Columns:
    if TIME_COLUMN not in names or QUANTITY_COLUMN not in names:
        raise ReadingFileError(
            f"{source}: the first row must name the columns {TIME_COLUMN!r} and "
            f"{QUANTITY_COLUMN!r}, found {[name for name in names if name]}"
        )
    for name in [*(options.columns or ()), *([options.series_column] if options.series_column else [])]:
        if name not in names:
            raise ReadingFileError(f"{source}: the header has no column {name!r}")
    series_name = options.series_column or SERIES_COLUMN
    if options.columns is not None:
        read = set(options.columns) | {TIME_COLUMN, QUANTITY_COLUMN}
        series = series_name if series_name in options.columns else None
    else:
        series = series_name if series_name in names else None
        read = {TIME_COLUMN, QUANTITY_COLUMN, *([series] if series else [])}
        unread = [name for name in names if name not in read]
        if unread:
            raise ReadingFileError(
                f"{source}: the header has columns the import does not read: {unread}; "
                "name the columns to read (--columns) to ignore the others"
            )
    repeated = sorted({name for name in names if name in read and names.count(name) > 1})
    if repeated:
        raise ReadingFileError(f"{source}: the header names {repeated} more than once")
    return _Columns(
        names.index(TIME_COLUMN),
        names.index(QUANTITY_COLUMN),
        names.index(series) if series else None,
        series,
    )


def _as_utc(value: object, row_number: int) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ReadingFileError(f"row {row_number}: {TIME_COLUMN} {value!r} is not a date-time") from None
    else:
        raise ReadingFileError(f"row {row_number}: {TIME_COLUMN} {value!r} is not a date-time")
    # The column is UTC by name: naive values are UTC, aware ones are converted.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _as_quantity(value: object, row_number: int, decimal_mark: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a number")
    text = value
    if isinstance(value, str) and decimal_mark != ".":
        if "." in value:
            raise ReadingFileError(
                f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a number with "
                f"{decimal_mark!r} as the decimal mark"
            )
        text = value.replace(decimal_mark, ".")
    try:
        quantity = float(text)
    except ValueError:
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a number") from None
    if not math.isfinite(quantity):
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a finite number")
    problem = quantity_problem(quantity)
    if problem is not None:
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} {problem}")
    return quantity


def _as_series_id(value: object, row_number: int, column: str) -> str:
    text = _cell_name(value)
    problem = (
        "it is empty"
        if not text
        else f"it is {len(text)} characters long; the maximum is {SERIES_ID_MAX_LENGTH}"
        if len(text) > SERIES_ID_MAX_LENGTH
        else "it holds characters that are not printable"
        if not text.isprintable()
        else None
    )
    if problem:
        raise ReadingFileError(f"row {row_number}: {column} {text!r} is not a series id: {problem}")
    return text


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


class ReadingTable:
    """An open readings file whose header has been checked; rows() reads the rest once.

    rows_read and bytes_read say how far reading got (bytes for a CSV file, whose size is
    size_bytes; an .xlsx file says row_count instead), also after a bad row stopped it.
    """

    def __init__(self, path: Path, options: TableOptions) -> None:
        self.source = path.name
        self.rows_read = 0
        self.bytes_read = 0
        self.size_bytes: int | None = None
        self.row_count: int | None = None
        self.layout: CsvLayout | None = None
        self._options = options
        self._resources = contextlib.ExitStack()
        suffix = path.suffix.lower()
        try:
            if suffix == ".xlsx":
                self._table = self._open_workbook(path)
            elif suffix == ".csv":
                self._table = self._open_csv(path)
            else:
                raise ReadingFileError(f"{path.name}: expected an .xlsx or .csv file")
            header = next(self._table, None)
            if header is None:
                raise ReadingFileError(f"{self.source}: the file is empty")
            names = [_cell_name(cell) for cell in header]
            if self.layout is None:  # a sheet may report empty cells after its last column
                while names and not names[-1]:
                    names.pop()
            self._width = len(names)
            self._columns = _find_columns(names, options, self.source)
        except BaseException:
            self._resources.close()
            raise
        self.series_column = self._columns.series_name

    def _open_workbook(self, path: Path) -> Iterator[tuple[object, ...]]:
        workbook = _open_workbook(path)
        self._resources.callback(workbook.close)
        sheet = workbook.worksheets[0]
        self.row_count = sheet.max_row - 1 if sheet.max_row else None
        return iter(sheet.iter_rows(values_only=True))

    def _open_csv(self, path: Path) -> Iterator[tuple[object, ...]]:
        try:
            file = self._resources.enter_context(path.open("rb"))
            self.size_bytes = path.stat().st_size
        except OSError as error:
            raise ReadingFileError(f"{path.name}: cannot be read ({error.strerror})") from None
        lines = self._decoded_lines(file)
        first = next(lines, None)
        if first is None:
            raise ReadingFileError(f"{self.source}: the file is empty")
        self.layout = self._csv_layout(first)
        reader = csv.reader(itertools.chain([first], lines), delimiter=self.layout.delimiter)
        self._csv_reader = reader
        return (tuple(row) for row in reader)

    def _decoded_lines(self, file: IO[bytes]) -> Iterator[str]:
        # Lines are read as bytes to know how far into the file reading is; UTF-8 never puts
        # a newline byte inside a character, so cutting at b"\n" is safe.
        for raw in file:
            offset = self.bytes_read
            self.bytes_read += len(raw)
            line = raw.removeprefix(_BYTE_ORDER_MARK) if offset == 0 else raw
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ReadingFileError(
                    f"{self.source}: not UTF-8 text near byte {offset + error.start}; save the file as UTF-8"
                ) from None

    def _csv_layout(self, header_line: str) -> CsvLayout:
        options = self._options
        if options.delimiter is not None:
            delimiter = options.delimiter
        elif ";" in header_line and "," not in header_line:
            delimiter = ";"
        else:
            delimiter = ","
        decimal_mark = options.decimal_mark or ("," if delimiter == ";" else ".")
        if decimal_mark == delimiter:
            raise ReadingFileError(
                f"{self.source}: {delimiter!r} separates the fields, so it cannot be the decimal mark; "
                "separate the fields with ';'"
            )
        return CsvLayout(delimiter, decimal_mark)

    def _row_number(self, position: int) -> int:
        # A CSV row's number is its (last) line in the file; a sheet's, its row.
        return self._csv_reader.line_num if self.layout is not None else position

    def rows(self) -> Iterator[ReadingRow]:
        """The data rows, read incrementally; a bad one raises ReadingFileError naming it."""
        columns = self._columns
        decimal_mark = self.layout.decimal_mark if self.layout else "."
        try:
            for position, row in enumerate(self._table, start=2):
                if all(_blank(value) for value in row):
                    continue  # blank rows (trailing ones are common in spreadsheets)
                row_number = self._row_number(position)
                if self.layout is not None and len(row) != self._width:
                    raise ReadingFileError(f"row {row_number}: {self._width_problem(len(row))}")
                if self.layout is None and any(not _blank(value) for value in row[self._width :]):
                    width = max(i for i, value in enumerate(row, start=1) if not _blank(value))
                    raise ReadingFileError(f"row {row_number}: {self._width_problem(width)}")
                series_id = (
                    _as_series_id(row[columns.series], row_number, columns.series_name or "")
                    if columns.series is not None
                    else None
                )
                yield ReadingRow(
                    _as_utc(row[columns.time], row_number),
                    _as_quantity(row[columns.quantity], row_number, decimal_mark),
                    series_id,
                )
                self.rows_read += 1
        except csv.Error as error:
            raise ReadingFileError(f"row {self._row_number(0)}: not a CSV row ({error})") from None

    def _width_problem(self, count: int) -> str:
        problem = f"{_fields(count)} where the header has {self._width}"
        if self.layout == COMMA_SEPARATED and count > self._width:
            problem += (
                " (a decimal comma in a file whose fields are separated by ','? "
                "Separate them with ';' or quote the numbers)"
            )
        return problem

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _open_workbook(path: Path) -> "Workbook":
    # Imported here: openpyxl (and numpy, which it loads where installed) is for .xlsx files
    # only, and importing it first cost every other command of the CLI about 0.2 s at start.
    import openpyxl

    try:
        # Read-only mode streams rows instead of loading the whole workbook into memory.
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise ReadingFileError(f"{path.name}: not a readable .xlsx workbook ({error})") from None


def open_table(path: Path, options: TableOptions) -> ReadingTable:
    """The file opened and its header checked; close it (or use it as a context manager)."""
    return ReadingTable(path, options)


def count_rows(path: Path) -> int | None:
    """The number of data rows if the file says so cheaply (xlsx dimensions), else None."""
    if path.suffix.lower() != ".xlsx":
        return None
    workbook = _open_workbook(path)
    try:
        max_row = workbook.worksheets[0].max_row
        return max_row - 1 if max_row else None
    finally:
        workbook.close()


def read_rows(path: Path, options: TableOptions | None = None) -> Iterator[ReadingRow]:
    """Rows of the first sheet of an .xlsx, or of a .csv, read incrementally."""
    with open_table(path, options or TableOptions()) as table:
        yield from table.rows()
