"""What makes a reading acceptable: series ids, times and quantities."""

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timeseries_aggregation.domain.readings import (
    EARLIEST_TIME,
    LATEST_TIME,
    check_series_id,
    check_time,
    quantity_problem,
)
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.limits import QUANTITY_KWH_MAX_MAGNITUDE, SERIES_ID_MAX_LENGTH

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

# A field path the way the transport names a reading inside a batch: the checks must echo it.
FIELD = "readings[3].series_id"
ONE_MICROSECOND = timedelta(microseconds=1)

# Characters str.isprintable() accepts: letters, marks, numbers, punctuation, symbols, space.
printable_characters = st.characters(categories=("L", "M", "N", "P", "S")) | st.just(" ")
control_characters = st.characters(categories=["Cc"])
in_range_times = st.datetimes(
    min_value=EARLIEST_TIME.replace(tzinfo=None),
    max_value=(LATEST_TIME - ONE_MICROSECOND).replace(tzinfo=None),
    timezones=st.just(UTC),
)


def is_accepted(check: Callable[..., None], *arguments: object) -> bool:
    """Whether check(*arguments) passes instead of raising InvalidArgumentError."""
    try:
        check(*arguments)
    except InvalidArgumentError:
        return False
    return True


def rejection(check: Callable[..., object], *arguments: object) -> InvalidArgumentError:
    """The InvalidArgumentError that calling check(*arguments) raises."""
    with pytest.raises(InvalidArgumentError) as caught:
        check(*arguments)
    return caught.value


class TestSeriesId:
    @pytest.mark.parametrize("length", [1, SERIES_ID_MAX_LENGTH])
    def test_lengths_from_one_to_the_maximum_are_accepted(self, length: int) -> None:
        assert is_accepted(check_series_id, "x" * length, FIELD)

    def test_empty_is_rejected_naming_the_field(self) -> None:
        error = rejection(check_series_id, "", FIELD)

        assert error.field == FIELD
        assert error.description == "must not be empty"
        assert str(error) == f"{FIELD}: must not be empty"

    def test_one_character_too_long_is_rejected_with_both_lengths(self) -> None:
        error = rejection(check_series_id, "x" * (SERIES_ID_MAX_LENGTH + 1), FIELD)

        assert error.field == FIELD
        assert error.description == "is 129 characters long; the maximum is 128"

    def test_length_counts_characters_not_bytes(self) -> None:
        # 128 two-byte characters: 256 bytes of UTF-8, still within the limit.
        assert is_accepted(check_series_id, "é" * SERIES_ID_MAX_LENGTH, FIELD)

    @pytest.mark.parametrize("control", ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
    @pytest.mark.parametrize("position", ["start", "middle", "end"])
    def test_control_characters_are_rejected_anywhere(self, control: str, position: str) -> None:
        series_id = {"start": control + "meter", "middle": "met" + control + "er", "end": "meter" + control}
        error = rejection(check_series_id, series_id[position], FIELD)

        assert error.field == FIELD
        assert error.description.startswith("holds a control character U+")

    def test_length_is_checked_before_content(self) -> None:
        error = rejection(check_series_id, "\x00" * (SERIES_ID_MAX_LENGTH + 1), FIELD)

        assert "maximum is 128" in error.description

    @given(st.text(printable_characters, min_size=1, max_size=SERIES_ID_MAX_LENGTH).filter(str.strip))
    def test_any_printable_id_up_to_the_maximum_is_accepted(self, series_id: str) -> None:
        assert is_accepted(check_series_id, series_id, FIELD)

    @pytest.mark.parametrize("blank", [" ", "   ", " " * SERIES_ID_MAX_LENGTH])
    def test_an_id_of_spaces_alone_is_rejected(self, blank: str) -> None:
        error = rejection(check_series_id, blank, FIELD)

        assert error.field == FIELD
        assert error.description == "is blank (only spaces); a series id needs a visible character"
        # A lookup still finds a series stored under such an id before the rule.
        assert is_accepted(check_series_id, blank, FIELD, True)

    @pytest.mark.parametrize("series_id", [" meter", "meter ", "a b"])
    def test_spaces_beside_other_characters_are_kept(self, series_id: str) -> None:
        assert is_accepted(check_series_id, series_id, FIELD)

    @pytest.mark.parametrize(
        ("series_id", "description"),
        [
            ("m\u200b1", "an invisible format character U+200B (ZERO WIDTH SPACE) at position 1"),
            ("\ufeffm1", "an invisible format character U+FEFF (ZERO WIDTH NO-BREAK SPACE) at position 0"),
            ("m\u00a01", "an unusual space U+00A0 (NO-BREAK SPACE) at position 1"),
            ("m1\u2028", "a line separator U+2028 (LINE SEPARATOR) at position 2"),
            ("m\ue0001", "a private-use character U+E000 at position 1"),
            ("m\t1", "a control character U+0009 at position 1"),
        ],
    )
    def test_an_unprintable_character_is_named(self, series_id: str, description: str) -> None:
        error = rejection(check_series_id, series_id, FIELD)

        assert error.description == f"holds {description}; only printable characters are allowed"

    @given(
        st.text(printable_characters, max_size=60),
        control_characters,
        st.text(printable_characters, max_size=60),
    )
    def test_any_id_with_a_control_character_is_rejected(
        self, prefix: str, control: str, suffix: str
    ) -> None:
        error = rejection(check_series_id, prefix + control + suffix, "series_id")

        assert error.field == "series_id"


class TestTime:
    @pytest.mark.parametrize(
        "time",
        [EARLIEST_TIME, LATEST_TIME - ONE_MICROSECOND, datetime(2025, 10, 26, 1, 30, tzinfo=UTC)],
        ids=["earliest", "just-before-latest", "ordinary"],
    )
    def test_times_in_range_are_accepted(self, time: datetime) -> None:
        assert is_accepted(check_time, time, "start_time")

    @pytest.mark.parametrize(
        "time",
        [EARLIEST_TIME - ONE_MICROSECOND, LATEST_TIME, LATEST_TIME + timedelta(days=365)],
        ids=["just-before-earliest", "latest", "after-latest"],
    )
    def test_times_out_of_range_are_rejected(self, time: datetime) -> None:
        error = rejection(check_time, time, "readings[0].time")

        assert error.field == "readings[0].time"
        assert error.description == (
            f"{time.isoformat()} is outside the supported range "
            "[1970-01-01T00:00:00+00:00, 2100-01-01T00:00:00+00:00)"
        )

    def test_bounds_compare_instants_not_wall_clocks(self) -> None:
        plus_one = timezone(timedelta(hours=1))

        assert is_accepted(check_time, datetime(1970, 1, 1, 1, 0, tzinfo=plus_one), "t")
        assert rejection(check_time, datetime(2100, 1, 1, 1, 0, tzinfo=plus_one), "t").field == "t"

    @given(in_range_times)
    def test_any_time_in_range_is_accepted(self, time: datetime) -> None:
        assert is_accepted(check_time, time, "time")

    @given(
        st.datetimes(max_value=(EARLIEST_TIME - ONE_MICROSECOND).replace(tzinfo=None), timezones=st.just(UTC))
        | st.datetimes(min_value=LATEST_TIME.replace(tzinfo=None), timezones=st.just(UTC))
    )
    def test_any_time_out_of_range_is_rejected(self, time: datetime) -> None:
        error = rejection(check_time, time, "end_time")

        assert error.field == "end_time"
        assert time.isoformat() in error.description


class TestQuantity:
    @pytest.mark.parametrize("quantity", [math.nan, math.inf, -math.inf])
    def test_non_finite_numbers_are_rejected(self, quantity: float) -> None:
        assert quantity_problem(quantity) == f"must be a finite number, got {quantity}"

    @pytest.mark.parametrize("quantity", [0.0, -0.0, -12.5, 5e-324, 1e12, -1e12])
    def test_edge_numbers_are_accepted(self, quantity: float) -> None:
        assert quantity_problem(quantity) is None

    @given(st.floats(min_value=-QUANTITY_KWH_MAX_MAGNITUDE, max_value=QUANTITY_KWH_MAX_MAGNITUDE))
    def test_any_number_within_the_bound_is_accepted(self, quantity: float) -> None:
        assert quantity_problem(quantity) is None

    @given(
        st.floats(min_value=QUANTITY_KWH_MAX_MAGNITUDE, exclude_min=True, allow_infinity=False)
        | st.floats(max_value=-QUANTITY_KWH_MAX_MAGNITUDE, exclude_max=True, allow_infinity=False)
    )
    def test_any_finite_number_beyond_the_bound_is_rejected(self, quantity: float) -> None:
        assert quantity_problem(quantity) == (
            f"is {quantity} kWh; a reading lies within ±1e+12 kWh "
            "(more than a year of a country's consumption)"
        )
