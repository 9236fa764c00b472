"""Reading (time, quantity) rows from .xlsx and .csv files."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import openpyxl
import pytest

from timeseries_aggregation.readers import (
    CsvLayout,
    ReadingFileError,
    ReadingRow,
    TableOptions,
    count_rows,
    open_table,
    read_rows,
)

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

EXAMPLE_XLSX = Path(__file__).parent / "data" / "example.xlsx"
HEADER = "Time (UTC),Quantity kWh\n"


def write_csv(directory: Path, text: str, name: str = "readings.csv") -> Path:
    """A UTF-8 CSV file with the given text."""
    path = directory / name
    path.write_bytes(text.encode())
    return path


def write_xlsx(directory: Path, rows: Sequence[Sequence[object]], name: str = "readings.xlsx") -> Path:
    """A workbook whose first sheet holds the given rows."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(list(row))
    path = directory / name
    workbook.save(path)
    return path


def read_error(path: Path, options: TableOptions | None = None) -> str:
    """The message of the ReadingFileError that reading the whole file raises."""
    with pytest.raises(ReadingFileError) as caught:
        list(read_rows(path, options or TableOptions()))
    return str(caught.value)


def utc(text: str) -> datetime:
    """An aware UTC datetime from an ISO string without offset."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class TestExampleWorkbook:
    def test_every_hour_of_2025_reads_as_an_aware_utc_row(self) -> None:
        rows = list(read_rows(EXAMPLE_XLSX))

        assert len(rows) == 8760
        assert rows[0] == ReadingRow(utc("2025-01-01T00:00"), 9000.0)
        assert rows[-1] == ReadingRow(utc("2025-12-31T23:00"), 9000.0)
        assert {row.quantity_kwh for row in rows} == {9000.0}
        assert all(row.time.tzinfo is UTC for row in rows)
        assert all(later.time - earlier.time == timedelta(hours=1) for earlier, later in pairwise(rows))

    def test_count_rows_reads_the_dimensions(self) -> None:
        assert count_rows(EXAMPLE_XLSX) == 8760


class TestCsv:
    def test_times_with_and_without_offsets_are_converted_to_utc(self, tmp_path: Path) -> None:
        path = write_csv(
            tmp_path,
            HEADER
            + "2025-01-01T00:00:00Z,1\n"
            + "2025-01-01T01:00:00+02:00,2.5\n"
            + "2025-01-01T02:00:00-05:30,-3\n"
            + "2025-01-01T03:00:00,1e3\n"
            + "2025-01-01 04:00,4\n"
            + "2025-01-01T05:00:00.123456Z, 5 \n",
        )

        assert list(read_rows(path)) == [
            ReadingRow(utc("2025-01-01T00:00"), 1.0),
            ReadingRow(utc("2024-12-31T23:00"), 2.5),
            ReadingRow(utc("2025-01-01T07:30"), -3.0),
            ReadingRow(utc("2025-01-01T03:00"), 1000.0),
            ReadingRow(utc("2025-01-01T04:00"), 4.0),
            ReadingRow(utc("2025-01-01T05:00:00.123456"), 5.0),
        ]

    def test_every_time_is_aware_utc(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-06-01T12:00,1\n2025-06-01T12:00+09:00,1\n")

        assert [row.time.tzinfo for row in read_rows(path)] == [UTC, UTC]

    def test_byte_order_mark_before_the_header_is_ignored(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "\ufeff" + HEADER + "2025-01-01T00:00Z,7\n")

        assert list(read_rows(path)) == [ReadingRow(utc("2025-01-01T00:00"), 7.0)]

    def test_blank_trailing_rows_are_skipped(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,7\n,\n\n,,\n  ,  \n")

        assert list(read_rows(path)) == [ReadingRow(utc("2025-01-01T00:00"), 7.0)]

    def test_columns_are_found_by_name_in_any_order(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, " Quantity kWh ,Time (UTC)\n7,2025-01-01T00:00Z\n")

        assert list(read_rows(path)) == [ReadingRow(utc("2025-01-01T00:00"), 7.0)]

    def test_columns_named_by_the_options_are_read_and_the_others_ignored(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "Meter, Quantity kWh ,Note,Time (UTC)\nm1,7,x,2025-01-01T00:00Z\n")
        options = TableOptions(columns=("Time (UTC)", "Quantity kWh"))

        assert list(read_rows(path, options)) == [ReadingRow(utc("2025-01-01T00:00"), 7.0)]

    def test_columns_the_import_does_not_read_are_refused(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "Time (UTC),Quantity kWh,Note\n2025-01-01T00:00Z,7,x\n")

        assert read_error(path) == (
            "readings.csv: the header has columns the import does not read: ['Note']; "
            "name the columns to read (--columns) to ignore the others"
        )

    def test_columns_named_by_the_options_must_be_in_the_header(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,7\n")
        options = TableOptions(columns=("Time (UTC)", "Quantity kWh", "Note"))

        assert read_error(path, options) == "readings.csv: the header has no column 'Note'"

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (
                "2025-10-01 00:00:00,1,234",
                "row 2: 3 fields where the header has 2 (a decimal comma in a file whose fields "
                "are separated by ','? Separate them with ';' or quote the numbers)",
            ),
            ("2025-10-01 00:00:00", "row 2: 1 field where the header has 2"),
        ],
        ids=["decimal-comma", "short-row"],
    )
    def test_a_row_with_more_or_fewer_fields_than_the_header_names_its_row(
        self, tmp_path: Path, line: str, message: str
    ) -> None:
        path = write_csv(tmp_path, HEADER + "2025-10-01 01:00:00,2\n" + line + "\n")

        assert read_error(path) == message.replace("row 2", "row 3")

    def test_row_numbers_are_line_numbers_past_quoted_line_breaks(self, tmp_path: Path) -> None:
        path = write_csv(
            tmp_path,
            'Time (UTC),Quantity kWh,Note\n2025-10-01 00:00:00,1,"two\nlines"\n2025-10-01 01:00:00,x,\n',
        )
        options = TableOptions(columns=("Time (UTC)", "Quantity kWh"))

        assert read_error(path, options) == "row 4: Quantity kWh 'x' is not a number"

    def test_header_only_file_has_no_rows(self, tmp_path: Path) -> None:
        assert list(read_rows(write_csv(tmp_path, HEADER))) == []

    def test_extension_is_case_insensitive(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,7\n", name="READINGS.CSV")

        assert list(read_rows(path)) == [ReadingRow(utc("2025-01-01T00:00"), 7.0)]

    def test_count_rows_does_not_scan_a_csv(self, tmp_path: Path) -> None:
        assert count_rows(write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,7\n")) is None

    def test_bad_time_names_the_row_and_column(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,1\n2025-13-01T00:00Z,2\n")

        assert read_error(path) == "row 3: Time (UTC) '2025-13-01T00:00Z' is not a date-time"

    def test_bad_number_names_the_row_and_column(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,twelve\n")

        assert read_error(path) == "row 2: Quantity kWh 'twelve' is not a number"

    @pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e999"])
    def test_non_finite_number_names_the_row_and_column(self, tmp_path: Path, text: str) -> None:
        path = write_csv(tmp_path, HEADER + f"2025-01-01T00:00Z,1\n2025-01-01T01:00Z,{text}\n")

        assert read_error(path) == f"row 3: Quantity kWh '{text}' is not a finite number"

    @pytest.mark.parametrize("text", ["1.7e308", "-2e12"])
    def test_number_beyond_the_bound_names_the_row_and_column(self, tmp_path: Path, text: str) -> None:
        path = write_csv(tmp_path, HEADER + f"2025-01-01T00:00Z,1e12\n2025-01-01T01:00Z,{text}\n")

        assert read_error(path) == (
            f"row 3: Quantity kWh '{text}' is {float(text)} kWh; a reading lies within ±1e+12 kWh "
            "(more than a year of a country's consumption)"
        )

    def test_rows_already_read_are_returned_before_the_error(self, tmp_path: Path) -> None:
        rows = read_rows(write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,1\nyesterday,2\n"))

        assert next(rows) == ReadingRow(utc("2025-01-01T00:00"), 1.0)
        with pytest.raises(ReadingFileError, match=r"^row 3: Time \(UTC\) 'yesterday'"):
            next(rows)

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (",5", "row 2: Time (UTC) '' is not a date-time"),
            ("2025-01-01T00:00Z,", "row 2: Quantity kWh '' is not a number"),
        ],
        ids=["empty-time", "empty-quantity"],
    )
    def test_half_empty_row_names_the_missing_column(self, tmp_path: Path, line: str, message: str) -> None:
        assert read_error(write_csv(tmp_path, HEADER + line + "\n")) == message

    @pytest.mark.parametrize(
        ("header", "found"),
        [
            ("Time,Quantity\n", "['Time', 'Quantity']"),
            ("Time (UTC)\n", "['Time (UTC)']"),
            ("Quantity kWh,Time (Local)\n", "['Quantity kWh', 'Time (Local)']"),
            ("\n", "[]"),
        ],
    )
    def test_missing_header_columns_are_named(self, tmp_path: Path, header: str, found: str) -> None:
        path = write_csv(tmp_path, header + "2025-01-01T00:00Z,1\n")

        assert read_error(path) == (
            "readings.csv: the first row must name the columns 'Time (UTC)' and 'Quantity kWh', "
            f"found {found}"
        )

    def test_empty_file_is_named(self, tmp_path: Path) -> None:
        assert read_error(write_csv(tmp_path, "")) == "readings.csv: the file is empty"

    def test_file_that_cannot_be_opened_is_a_reading_file_error(self, tmp_path: Path) -> None:
        (tmp_path / "folder.csv").mkdir()

        assert read_error(tmp_path / "folder.csv") == "folder.csv: cannot be read (Is a directory)"

    def test_file_that_is_not_utf8_is_a_reading_file_error(self, tmp_path: Path) -> None:
        path = tmp_path / "readings.csv"
        path.write_bytes((HEADER + "2025-01-01T00:00Z,1\n# Zähler\n").encode("latin-1"))

        assert "readings.csv" in read_error(path)


class TestEuropeanCsv:
    """Spreadsheets set to a European locale write ';' between fields and ',' as decimal mark."""

    def test_a_header_separated_by_semicolons_means_decimal_commas(self, tmp_path: Path) -> None:
        path = write_csv(
            tmp_path,
            "Time (UTC);Quantity kWh\n2025-10-01 00:00:00;1,234\n2025-10-01 01:00:00;-2\n"
            "2025-10-01 02:00:00;1e3\n",
        )

        with open_table(path, TableOptions()) as table:
            assert table.layout == CsvLayout(delimiter=";", decimal_mark=",")
            assert list(table.rows()) == [
                ReadingRow(utc("2025-10-01T00:00"), 1.234),
                ReadingRow(utc("2025-10-01T01:00"), -2.0),
                ReadingRow(utc("2025-10-01T02:00"), 1000.0),
            ]

    def test_options_name_the_layout_of_a_file_whose_header_cannot(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "Quantity kWh\n7\n")
        assert "must name the columns" in read_error(path)

        path = write_csv(tmp_path, "Time (UTC);Quantity kWh\n2025-10-01 00:00:00;2.5\n")
        options = TableOptions(delimiter=";", decimal_mark=".")
        assert list(read_rows(path, options)) == [ReadingRow(utc("2025-10-01T00:00"), 2.5)]

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("1.234", "row 2: Quantity kWh '1.234' is not a number with ',' as the decimal mark"),
            ("1.234,5", "row 2: Quantity kWh '1.234,5' is not a number with ',' as the decimal mark"),
            ("1,2,3", "row 2: Quantity kWh '1,2,3' is not a number"),
        ],
    )
    def test_a_number_that_is_not_written_with_the_decimal_comma_is_refused(
        self, tmp_path: Path, value: str, message: str
    ) -> None:
        path = write_csv(tmp_path, f"Time (UTC);Quantity kWh\n2025-10-01 00:00:00;{value}\n")

        assert read_error(path) == message

    def test_a_row_with_more_fields_than_the_header_names_its_row(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "Time (UTC);Quantity kWh\n2025-10-01 00:00:00;1;2\n")

        assert read_error(path) == "row 2: 3 fields where the header has 2"

    def test_the_field_separator_cannot_be_the_decimal_mark(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-10-01 00:00:00,1\n")

        assert read_error(path, TableOptions(decimal_mark=",")) == (
            "readings.csv: ',' separates the fields, so it cannot be the decimal mark; "
            "separate the fields with ';'"
        )


class TestSeriesColumn:
    def test_a_meter_column_names_each_rows_series(self, tmp_path: Path) -> None:
        path = write_csv(
            tmp_path,
            "Meter,Time (UTC),Quantity kWh\n"
            "m1,2025-10-01 00:00:00,1\n"
            " m2 ,2025-10-01 00:00:00,2\n"
            "m1,2025-10-01 01:00:00,3\n",
        )

        with open_table(path, TableOptions()) as table:
            assert table.series_column == "Meter"
            assert list(table.rows()) == [
                ReadingRow(utc("2025-10-01T00:00"), 1.0, "m1"),
                ReadingRow(utc("2025-10-01T00:00"), 2.0, "m2"),
                ReadingRow(utc("2025-10-01T01:00"), 3.0, "m1"),
            ]

    def test_a_file_without_it_has_no_series_column(self, tmp_path: Path) -> None:
        with open_table(write_csv(tmp_path, HEADER), TableOptions()) as table:
            assert table.series_column is None

    def test_another_column_can_name_the_series(self, tmp_path: Path) -> None:
        path = write_xlsx(
            tmp_path, [("Zähler", "Time (UTC)", "Quantity kWh"), ("z-1", datetime(2025, 1, 1), 4)]
        )

        assert list(read_rows(path, TableOptions(series_column="Zähler"))) == [
            ReadingRow(utc("2025-01-01T00:00"), 4.0, "z-1")
        ]
        assert read_error(path) == (
            "readings.xlsx: the header has columns the import does not read: ['Zähler']; "
            "name the columns to read (--columns) to ignore the others"
        )

    def test_a_series_column_named_by_the_options_must_be_in_the_header(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,1\n")

        assert read_error(path, TableOptions(series_column="Zähler")) == (
            "readings.csv: the header has no column 'Zähler'"
        )

    @pytest.mark.parametrize(
        ("meter", "message"),
        [
            ("", "it is empty"),
            ("m" * 129, "it is 129 characters long; the maximum is 128"),
        ],
        ids=["empty", "too-long"],
    )
    def test_a_bad_series_id_names_the_row(self, tmp_path: Path, meter: str, message: str) -> None:
        path = write_csv(tmp_path, f"Meter,Time (UTC),Quantity kWh\n{meter},2025-01-01T00:00Z,1\n")

        assert read_error(path) == f"row 2: Meter {meter!r} is not a series id: {message}"


class TestXlsx:
    def test_naive_datetimes_are_utc_and_strings_are_parsed(self, tmp_path: Path) -> None:
        path = write_xlsx(
            tmp_path,
            [
                ("Time (UTC)", "Quantity kWh"),
                (datetime(2025, 3, 30, 1, 0), 12),
                (datetime(2025, 3, 30, 2, 0), 12.5),
                ("2025-03-30T05:00:00+02:00", "13.25"),
            ],
        )

        assert list(read_rows(path)) == [
            ReadingRow(utc("2025-03-30T01:00"), 12.0),
            ReadingRow(utc("2025-03-30T02:00"), 12.5),
            ReadingRow(utc("2025-03-30T03:00"), 13.25),
        ]

    def test_blank_trailing_rows_are_skipped_and_counted_as_dimensions(self, tmp_path: Path) -> None:
        path = write_xlsx(
            tmp_path,
            [("Time (UTC)", "Quantity kWh"), (datetime(2025, 1, 1), 1), (None, None), ("", None)],
        )

        assert list(read_rows(path)) == [ReadingRow(utc("2025-01-01T00:00"), 1.0)]
        assert count_rows(path) == 3

    def test_only_the_first_sheet_is_read(self, tmp_path: Path) -> None:
        workbook = openpyxl.Workbook()
        first = workbook.active
        assert first is not None
        first.append(["Time (UTC)", "Quantity kWh"])
        first.append([datetime(2025, 1, 1), 1])
        second = workbook.create_sheet("Notes")
        second.append(["not", "a", "readings", "table"])
        path = tmp_path / "two-sheets.xlsx"
        workbook.save(path)

        assert list(read_rows(path)) == [ReadingRow(utc("2025-01-01T00:00"), 1.0)]
        assert count_rows(path) == 1

    def test_header_only_workbook_has_no_rows(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path, [("Time (UTC)", "Quantity kWh")])

        assert list(read_rows(path)) == []
        assert count_rows(path) == 0

    @pytest.mark.parametrize(
        ("cells", "message"),
        [
            ((3.5, 1), "row 3: Time (UTC) 3.5 is not a date-time"),
            (("soon", 1), "row 3: Time (UTC) 'soon' is not a date-time"),
            ((datetime(2025, 1, 1, 1), True), "row 3: Quantity kWh True is not a number"),
            ((datetime(2025, 1, 1, 1), "n/a"), "row 3: Quantity kWh 'n/a' is not a number"),
            ((datetime(2025, 1, 1, 1), None), "row 3: Quantity kWh None is not a number"),
            ((datetime(2025, 1, 1, 1), "inf"), "row 3: Quantity kWh 'inf' is not a finite number"),
        ],
        ids=[
            "number-as-time",
            "text-as-time",
            "boolean-quantity",
            "text-quantity",
            "missing-quantity",
            "infinite-text",
        ],
    )
    def test_bad_cell_names_the_row_and_column(
        self, tmp_path: Path, cells: tuple[object, object], message: str
    ) -> None:
        path = write_xlsx(tmp_path, [("Time (UTC)", "Quantity kWh"), (datetime(2025, 1, 1), 1), cells])

        assert read_error(path) == message

    def test_a_value_beyond_the_headers_columns_names_its_row(self, tmp_path: Path) -> None:
        path = write_xlsx(
            tmp_path,
            [("Time (UTC)", "Quantity kWh"), (datetime(2025, 1, 1), 1), (datetime(2025, 1, 1, 1), 1, 234)],
        )

        assert read_error(path) == "row 3: 3 fields where the header has 2"

    def test_missing_header_columns_are_named(self, tmp_path: Path) -> None:
        path = write_xlsx(tmp_path, [("Zeit", "Menge"), (datetime(2025, 1, 1), 1)], name="export.xlsx")

        assert read_error(path) == (
            "export.xlsx: the first row must name the columns 'Time (UTC)' and 'Quantity kWh', "
            "found ['Zeit', 'Menge']"
        )

    def test_empty_workbook_is_named(self, tmp_path: Path) -> None:
        assert read_error(write_xlsx(tmp_path, [], name="empty.xlsx")) == "empty.xlsx: the file is empty"

    def test_corrupt_workbook_is_a_reading_file_error(self, tmp_path: Path) -> None:
        path = tmp_path / "corrupt.xlsx"
        path.write_bytes(b"Time (UTC),Quantity kWh\n")

        assert "corrupt.xlsx" in read_error(path)


@pytest.mark.parametrize("name", ["readings.txt", "readings.xls", "readings.json", "readings"])
def test_unsupported_extension_is_named(tmp_path: Path, name: str) -> None:
    path = write_csv(tmp_path, HEADER + "2025-01-01T00:00Z,1\n", name=name)

    assert read_error(path) == f"{name}: expected an .xlsx or .csv file"
    assert count_rows(path) is None
