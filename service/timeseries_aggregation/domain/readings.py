"""What makes a reading acceptable."""

import math
from datetime import UTC, datetime

from timeseries_aggregation.domain.characters import unprintable_character
from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.limits import QUANTITY_KWH_MAX_MAGNITUDE, SERIES_ID_MAX_LENGTH

# Readings and query bounds must fall inside [EARLIEST_TIME, LATEST_TIME): wide enough for
# any metering history, narrow enough to catch unit mistakes (milliseconds sent as seconds).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def check_series_id(series_id: str, field: str, allow_blank: bool = False) -> None:
    """Raise InvalidArgumentError unless series_id is 1..128 printable characters, not all of
    them spaces.

    `allow_blank` is for ids that look a series up (queries, selectors, page tokens): the
    catalog may hold a blank one from before blank ids were refused, and it stays reachable.
    Spaces at either end are kept as given; the only printable space is U+0020, so a blank id
    is one of those alone.
    """
    if not series_id:
        raise InvalidArgumentError(field, "must not be empty")
    if len(series_id) > SERIES_ID_MAX_LENGTH:
        raise InvalidArgumentError(
            field, f"is {len(series_id)} characters long; the maximum is {SERIES_ID_MAX_LENGTH}"
        )
    unprintable = unprintable_character(series_id)
    if unprintable is not None:
        raise InvalidArgumentError(field, f"holds {unprintable}; only printable characters are allowed")
    if series_id.isspace() and not allow_blank:
        raise InvalidArgumentError(field, "is blank (only spaces); a series id needs a visible character")


def check_time(time: datetime, field: str) -> None:
    """Raise InvalidArgumentError unless time lies in the supported range."""
    if not EARLIEST_TIME <= time < LATEST_TIME:
        raise InvalidArgumentError(
            field,
            f"{time.isoformat()} is outside the supported range "
            f"[{EARLIEST_TIME.isoformat()}, {LATEST_TIME.isoformat()})",
        )


def quantity_problem(quantity_kwh: float) -> str | None:
    """Why a quantity is not acceptable (not finite, or beyond the bound of limits.py), or None.

    The one wording of the rule: the server's vectorised check (domain/batch.py) reports its
    first bad value with it, and the CLI's import checks each cell with it (no numpy there).
    """
    if not math.isfinite(quantity_kwh):
        return f"must be a finite number, got {quantity_kwh}"
    if abs(quantity_kwh) > QUANTITY_KWH_MAX_MAGNITUDE:
        return (
            f"is {quantity_kwh} kWh; a reading lies within "
            f"±{QUANTITY_KWH_MAX_MAGNITUDE:g} kWh (more than a year of a country's consumption)"
        )
    return None
