"""Counts in messages."""

import pytest

from timeseries_aggregation.wording import counted


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
