"""Reading (time, quantity) rows from the spreadsheets and CSV files bulk loaders have."""

import csv
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openpyxl.workbook.workbook import Workbook

TIME_COLUMN = "Time (UTC)"
QUANTITY_COLUMN = "Quantity kWh"


class ReadingFileError(ValueError):
    """A file's content is not a readings table; the message names the row or column."""


@dataclass(frozen=True, slots=True)
class ReadingRow:
    time: datetime
    quantity_kwh: float


def _column_positions(header: tuple[object, ...], source: str) -> tuple[int, int]:
    names = [str(cell).strip() if cell is not None else "" for cell in header]
    try:
        return names.index(TIME_COLUMN), names.index(QUANTITY_COLUMN)
    except ValueError:
        raise ReadingFileError(
            f"{source}: the first row must name the columns {TIME_COLUMN!r} and "
            f"{QUANTITY_COLUMN!r}, found {[name for name in names if name]}"
        ) from None


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


def _as_quantity(value: object, row_number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a number")
    try:
        quantity = float(value)
    except ValueError:
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a number") from None
    if not math.isfinite(quantity):
        raise ReadingFileError(f"row {row_number}: {QUANTITY_COLUMN} {value!r} is not a finite number")
    return quantity


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _rows(table: Iterator[tuple[object, ...]], source: str) -> Iterator[ReadingRow]:
    header = next(table, None)
    if header is None:
        raise ReadingFileError(f"{source}: the file is empty")
    time_position, quantity_position = _column_positions(header, source)
    for row_number, row in enumerate(table, start=2):
        time_value = row[time_position] if time_position < len(row) else None
        quantity_value = row[quantity_position] if quantity_position < len(row) else None
        if _blank(time_value) and _blank(quantity_value):
            continue  # trailing blank rows are common in spreadsheets
        yield ReadingRow(_as_utc(time_value, row_number), _as_quantity(quantity_value, row_number))


def _open_workbook(path: Path) -> "Workbook":
    # Imported here: openpyxl (and numpy, which it loads where installed) is for .xlsx files
    # only, and importing it first cost every other command of the CLI about 0.2 s at start.
    import openpyxl

    try:
        # Read-only mode streams rows instead of loading the whole workbook into memory.
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise ReadingFileError(f"{path.name}: not a readable .xlsx workbook ({error})") from None


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


def read_rows(path: Path) -> Iterator[ReadingRow]:
    """Rows of the first sheet of an .xlsx, or of a .csv, read incrementally."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        workbook = _open_workbook(path)
        try:
            yield from _rows(workbook.worksheets[0].iter_rows(values_only=True), path.name)
        finally:
            workbook.close()
    elif suffix == ".csv":
        try:
            opened = path.open(newline="", encoding="utf-8-sig")
        except OSError as error:
            raise ReadingFileError(f"{path.name}: cannot be read ({error.strerror})") from None
        with opened as file:
            try:
                yield from _rows((tuple(row) for row in csv.reader(file)), path.name)
            except UnicodeDecodeError as error:
                raise ReadingFileError(
                    f"{path.name}: not UTF-8 text near byte {error.start}; save the file as UTF-8"
                ) from None
    else:
        raise ReadingFileError(f"{path.name}: expected an .xlsx or .csv file")
