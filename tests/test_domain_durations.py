"""Durations as operators write them: one whole number and a unit, or 0."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timeseries_aggregation.domain.durations import MAX_DURATION, format_duration, parse_duration

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("0", timedelta(0)),
        ("0d", timedelta(0)),
        (" 7d\n", timedelta(days=7)),
        ("007h", timedelta(hours=7)),
        ("36525d", MAX_DURATION),
    ],
)
def test_parses_a_number_and_a_unit(text: str, duration: timedelta) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    "text", ["", "30", "d", "30 d", "1.5h", "-1d", "+1d", "30D", "1w", "1d12h", "thirty days", "\uff11d"]
)
def test_rejects_anything_else_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"^must be a whole number followed by s, m, h or d") as caught:
        parse_duration(text)
    assert repr(text.strip()) in str(caught.value)


@pytest.mark.parametrize("text", ["36526d", "876601h", "99999999999999999999d", "9" * 5000 + "s"])
def test_rejects_more_than_a_hundred_years(text: str) -> None:
    with pytest.raises(ValueError, match=r"^must be at most 36525d \(100 years\)"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(days=30), "30d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=61), "61s"),
        (timedelta(0), "0"),
    ],
)
def test_formats_in_the_largest_whole_unit(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.integers(min_value=0, max_value=36525 * 86400))
def test_formatting_round_trips(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration
