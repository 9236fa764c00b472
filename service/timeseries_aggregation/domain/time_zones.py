"""Which time zone names the service accepts: one rule for the server and the command line.

Needs nothing beyond the standard library, so the client install's CLI checks a name as the
server would, and the same mistake gets the same answer on either side.
"""

import functools
import zoneinfo

from timeseries_aggregation.errors import InvalidArgumentError
from timeseries_aggregation.wording import quoted


@functools.cache
def _known_time_zones() -> frozenset[str]:
    # The IANA names proper: no "localtime", "posixrules" or file paths, which the
    # database may not know or may resolve differently.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


# IANA zones with daylight saving whose names PostgreSQL looks up as time zone abbreviations
# first, reading them as a fixed offset: their summer buckets would be an hour off. (EST, MST,
# HST, GMT, UCT, UTC and Zulu are abbreviations too, but fixed in both readings.)
READ_AS_FIXED_ABBREVIATIONS = frozenset({"CET", "EET", "MET", "WET"})


def check_time_zone(name: str, field: str) -> str:
    """Return name if it is an IANA zone the service buckets by, else raise InvalidArgumentError."""
    if name not in _known_time_zones():
        raise InvalidArgumentError(
            field, f"{quoted(name)} is not a known IANA time zone (e.g. 'Europe/Berlin')"
        )
    if name in READ_AS_FIXED_ABBREVIATIONS:
        raise InvalidArgumentError(
            field,
            f"{quoted(name)} is read by the database as a fixed-offset abbreviation, without daylight "
            "saving; use the zone of a place instead (e.g. 'Europe/Berlin')",
        )
    return name
