"""Counts in messages: '1 reading', '2 readings', '1 series'."""


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """The count and the noun, singular for one and plural otherwise (noun + 's' unless given)."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"
