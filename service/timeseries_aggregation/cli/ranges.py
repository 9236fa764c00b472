"""--from and --to as instants: local dates and date-times, in a time zone."""

import argparse
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time

from timeseries_aggregation.cli.exit_codes import UsageError


def _day_start(day: date, zone_name: str) -> datetime:
    return datetime.combine(day, clock_time(), zoneinfo.ZoneInfo(zone_name))


def _local_instant(moment: datetime, zone_name: str, option: str) -> datetime:
    """The instant a date-time names: as given where it has an offset, else its local time in
    the zone. A local time that the zone skips or repeats (a DST change) is a usage error."""
    if moment.tzinfo is not None:
        return moment
    zone = zoneinfo.ZoneInfo(zone_name)
    # fold picks the earlier or the later of a repeated local time; elsewhere both are one instant.
    first, second = moment.replace(tzinfo=zone, fold=0), moment.replace(tzinfo=zone, fold=1)
    if first.astimezone(UTC) < second.astimezone(UTC):
        raise UsageError(
            f"{option} {moment.isoformat()} happens twice in {zone_name} (the clocks go back): "
            f"add its offset, {first.isoformat()} or {second.isoformat()}"
        )
    if first.astimezone(UTC) > second.astimezone(UTC):
        raise UsageError(
            f"{option} {moment.isoformat()} does not exist in {zone_name} (the clocks go forward)"
        )
    return first


def range_start(moment: date | datetime, zone_name: str) -> datetime:
    """Where --from starts the range: at the local start of a date, or at a date-time."""
    if isinstance(moment, datetime):
        return _local_instant(moment, zone_name, "--from")
    return _day_start(moment, zone_name)


def range_end(moment: date | datetime, zone_name: str) -> datetime:
    """Where --to ends the range (exclusive): after the whole local date, or at a date-time."""
    if isinstance(moment, datetime):
        return _local_instant(moment, zone_name, "--to")
    return _day_start(moment + timedelta(days=1), zone_name)


def check_range(arguments: argparse.Namespace, start: datetime | None, end: datetime | None) -> None:
    """A usage error, naming --from and --to, when [start, end) holds no instant."""
    if start is None or end is None or start < end:
        return
    date_from, date_to = arguments.date_from.isoformat(), arguments.date_to.isoformat()
    if isinstance(arguments.date_from, datetime) or isinstance(arguments.date_to, datetime):
        raise UsageError(f"--to {date_to} is not after --from {date_from}: the range holds no instant")
    raise UsageError(f"--to {date_to} is before --from {date_from}")


def query_range(arguments: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """The instants of the inclusive local dates --from and --to: [start of --from, end of --to)."""
    zone = arguments.time_zone
    start = range_start(arguments.date_from, zone) if arguments.date_from else None
    end = range_end(arguments.date_to, zone) if arguments.date_to else None
    check_range(arguments, start, end)
    return start, end
