"""Counts in messages."""

import pytest

from timeseries_aggregation.wording import QUOTE_MAX_CHARACTERS, clipped, counted, quoted


@pytest.mark.parametrize(
    ("count", "noun", "plural", "text"),
    [
        (1, "reading", None, "1 reading"),
        (0, "reading", None, "0 readings"),
        (2, "message", None, "2 messages"),
        (1, "entry", "entries", "1 entry"),
        (3, "entry", "entries", "3 entries"),
        (1, "series", "series", "1 series"),
        (-1, "reading", None, "-1 readings"),
    ],
)
def test_one_is_singular_and_any_other_count_plural(
    count: int, noun: str, plural: str | None, text: str
) -> None:
    assert counted(count, noun, plural) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Europe/Berlin", "'Europe/Berlin'"),
        ("", "''"),
        ("it's", '"it\'s"'),
        ("tab\there", "'tab\\there'"),
        ("x" * QUOTE_MAX_CHARACTERS, repr("x" * QUOTE_MAX_CHARACTERS)),
    ],
)
def test_a_value_within_the_limit_is_quoted_whole(value: str, text: str) -> None:
    assert quoted(value) == text


def test_a_longer_value_is_cut_with_a_marker_and_its_length() -> None:
    value = "Mars/" + "x" * 16 * 1024 * 1024
    text = quoted(value)
    assert text == repr(value[:QUOTE_MAX_CHARACTERS])[:-1] + "…' (16,777,221 characters)"
    assert len(text) < 2 * QUOTE_MAX_CHARACTERS


def test_the_cut_is_made_before_escaping_so_no_escape_is_split() -> None:
    text = quoted("\x00" * 1_000, limit=3)
    assert text == "'\\x00\\x00\\x00…' (1,000 characters)"


def test_a_long_text_is_clipped_with_a_marker_and_its_length() -> None:
    assert clipped("short", 10) == "short"
    assert clipped("a" * 25, 10) == "a" * 10 + "… (25 characters)"
