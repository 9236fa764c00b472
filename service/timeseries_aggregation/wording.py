"""How messages word things: counts ('1 reading', '2 readings') and the caller's text they quote."""

# Caller input quoted in an error message is cut after this many characters. It is longer than
# any name a field accepts (an IANA zone has at most 32 characters, a label key 63), so a near
# miss, a typo or a key a few characters too long, is shown whole; and short enough that a
# message quoting a few values stays far below the 8 KiB of metadata that gRPC clients accept by
# default for a status's message and details (a 16 MiB value once made a 16 MiB error).
QUOTE_MAX_CHARACTERS = 100


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """The count and the noun, singular for one and plural otherwise (noun + 's' unless given)."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"


def quoted(value: str, limit: int = QUOTE_MAX_CHARACTERS) -> str:
    """repr(value), or for a longer value the repr of its first `limit` characters, an ellipsis
    and the full length: 'abc…' (16,777,216 characters).

    The cut comes before escaping, so no escape sequence is split.
    """
    if len(value) <= limit:
        return repr(value)
    prefix = repr(value[:limit])
    return f"{prefix[:-1]}…{prefix[-1]} ({len(value):,} characters)"


def clipped(text: str, limit: int) -> str:
    """text, or its first `limit` characters, an ellipsis and the full length when it is longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
