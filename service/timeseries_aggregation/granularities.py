"""Every granularity and what is known of it, in one table read by the domain, the transport,
the storage, the CLI and the client.

It imports nothing but the standard library, so that the client (installed without the server's
dependencies, and without the domain) can read it too; the transport maps its proto numbers to
the generated enum.
"""

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


class Granularity(enum.Enum):
    """Width of a bucket; buckets start at local boundaries of the query's time zone."""

    HOURLY = "hourly"
    DAY_OF_MONTH = "day_of_month"
    MONTHLY = "monthly"
    QUARTER_HOURLY = "quarter_hourly"
    HALF_HOURLY = "half_hourly"
    WEEKLY = "weekly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"


@dataclass(frozen=True, slots=True)
class GranularityInfo:
    """One granularity: its names, and the local calendar unit its buckets are."""

    granularity: Granularity
    # The value of timeseries.v1.Granularity (GRANULARITY_<enum name>).
    proto_value: int
    # What the CLI and the client call it; results carry this name.
    name: str
    # Other names the client accepts.
    aliases: tuple[str, ...]
    # The local length of a bucket, as a number of minutes, hours, days, weeks or months.
    step: int
    step_unit: str
    # The local length of the longest bucket (a month of 31 days).
    longest: timedelta
    # Seconds in every bucket and Unix seconds at which one starts, in a zone at UTC, where
    # the buckets can be all of one width (see domain.bucket_grid.fixed_width_buckets).
    fixed_width: tuple[int, int] | None
    # strftime format of the label of a bucket from its local start; %q is the quarter (1-4).
    label_format: str

    @property
    def clock(self) -> bool:
        """Buckets are a local hour or part of one: each also keeps one UTC offset, so the two
        02:15 quarters of a night when the clocks go back are two buckets."""
        return self.step_unit in ("minutes", "hours")

    def label(self, local_start: datetime) -> str:
        """The label of the bucket starting at a local time (naive, or aware in its zone)."""
        labeller = _LABELLERS.get(self.label_format)
        if labeller is not None:
            return labeller(local_start)
        return local_start.strftime(self.label_format.replace("%q", str((local_start.month - 1) // 3 + 1)))


# The label formats below, written out: a page labels up to 10,000 buckets, and strftime takes
# three times as long as isoformat. Each gives what strftime gives for years 1000 to 9999, of a
# naive or an aware local time.
_LABELLERS: dict[str, Callable[[datetime], str]] = {
    "%Y-%m-%dT%H:%M": lambda d: d.isoformat()[:16],
    "%Y-%m-%dT%H:00": lambda d: d.isoformat()[:13] + ":00",
    "%Y-%m-%d": lambda d: d.isoformat()[:10],
    "%G-W%V": lambda d: "{:04d}-W{:02d}".format(*d.isocalendar()[:2]),
    "%Y-%m": lambda d: d.isoformat()[:7],
    "%Y-Q%q": lambda d: f"{d.year:04d}-Q{(d.month - 1) // 3 + 1}",
    "%Y": lambda d: d.isoformat()[:4],
}


_HOUR = 3_600
_DAY = 86_400
GRANULARITIES = (
    GranularityInfo(
        Granularity.QUARTER_HOURLY,
        4,
        "quarter-hourly",
        (),
        15,
        "minutes",
        timedelta(minutes=15),
        (900, 0),
        "%Y-%m-%dT%H:%M",
    ),
    GranularityInfo(
        Granularity.HALF_HOURLY,
        5,
        "half-hourly",
        (),
        30,
        "minutes",
        timedelta(minutes=30),
        (1_800, 0),
        "%Y-%m-%dT%H:%M",
    ),
    GranularityInfo(
        Granularity.HOURLY, 1, "hourly", (), 1, "hours", timedelta(hours=1), (_HOUR, 0), "%Y-%m-%dT%H:00"
    ),
    GranularityInfo(
        Granularity.DAY_OF_MONTH,
        2,
        "daily",
        ("day_of_month",),
        1,
        "days",
        timedelta(days=1),
        (_DAY, 0),
        "%Y-%m-%d",
    ),
    # ISO weeks, from Monday (1970-01-05 was the first), labelled with the ISO week-numbering year.
    GranularityInfo(
        Granularity.WEEKLY, 6, "weekly", (), 1, "weeks", timedelta(days=7), (7 * _DAY, 4 * _DAY), "%G-W%V"
    ),
    GranularityInfo(Granularity.MONTHLY, 3, "monthly", (), 1, "months", timedelta(days=31), None, "%Y-%m"),
    GranularityInfo(
        Granularity.QUARTERLY, 7, "quarterly", (), 3, "months", timedelta(days=92), None, "%Y-Q%q"
    ),
    GranularityInfo(Granularity.YEARLY, 8, "yearly", (), 12, "months", timedelta(days=366), None, "%Y"),
)
GRANULARITY_INFO = {info.granularity: info for info in GRANULARITIES}
GRANULARITY_BY_PROTO = {info.proto_value: info for info in GRANULARITIES}
# Every name the client accepts, the names results carry first.
GRANULARITY_BY_NAME = {
    **{info.name: info for info in GRANULARITIES},
    **{alias: info for info in GRANULARITIES for alias in info.aliases},
}
