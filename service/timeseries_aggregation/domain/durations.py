"""Durations as operators write them in settings: `30d`, `12h`, `90m`, `45s`, or `0`."""

import re
from datetime import timedelta

# Largest unit first, so formatting picks the largest one that divides a duration.
_UNITS = {
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}
_DURATION = re.compile(r"(?P<amount>[0-9]+)(?P<unit>[dhms])", re.ASCII)
# Longer than anything the service keeps (readings lie before 2100); also keeps `now() - d`
# inside PostgreSQL's timestamp range.
MAX_DURATION = timedelta(days=36_525)


def parse_duration(text: str) -> timedelta:
    """A whole number and one unit (`s`, `m`, `h`, `d`), or `0`; raises ValueError saying what is wrong."""
    stripped = text.strip()
    if stripped == "0":
        return timedelta(0)
    match = _DURATION.fullmatch(stripped)
    if match is None:
        raise ValueError(
            "must be a whole number followed by s, m, h or d (e.g. 30d, 12h, 90m, 45s), or 0; "
            f"got {stripped!r}"
        )
    unit = _UNITS[match["unit"]]
    limit = MAX_DURATION // unit
    # Compare digit counts first: int() refuses strings of thousands of digits.
    digits = match["amount"].lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)} (100 years), got {stripped!r}")
    return int(digits) * unit


def format_duration(duration: timedelta) -> str:
    """A duration of whole seconds in the largest unit that expresses it exactly (the inverse of parse)."""
    if not duration:
        return "0"
    for symbol, unit in _UNITS.items():
        if duration % unit == timedelta(0):
            return f"{duration // unit}{symbol}"
    raise ValueError(f"must be whole seconds, got {duration}")
