"""The rows an aggregate statement groups into buckets: readings, or for a rolled-up series
the hourly and daily rollups of the whole hours and days of its window and the readings of
the rest.

Every source row has the columns (time, total, minimum, maximum, reading_count): a reading is
a row of one, at its own time; a rollup row sums its hour (day) at the hour's (day's) start.
Grouping them by the bucket of `time` gives the buckets the readings give, provided each
rollup row lies in one bucket: the window [lo, hi) is cut as

    lo ... h1 ... d1 ... d2 ... h2 ... hi

where [h1, h2) holds the window's whole UTC hours and [d1, d2) the whole UTC days among them:
readings for [lo, h1) and [h2, hi), daily rollups for [d1, d2) where the query's buckets are
made of UTC days, hourly rollups for the rest. Where an hour may straddle two buckets, the
hours that do are read as readings (see domain/rollups.py).
"""

import re

from timeseries_aggregation.domain.rollups import RollupPlan, RollupTier
from timeseries_aggregation.limits import QUANTITY_KWH_MAX_MAGNITUDE

_EPOCH = "TIMESTAMPTZ 'epoch'"
_READING_COLUMNS = (
    "time, quantity_kwh AS total, quantity_kwh AS minimum, quantity_kwh AS maximum, 1 AS reading_count"
)
_ROLLUP_COLUMNS = "bucket_start AS time, total, minimum, maximum, reading_count"
# Where each tier's rollups lie among a window's cuts (domain/rollups.CUT_NAMES): hourly ones
# in [h1, h2); or, where days come from daily rollups, daily ones in [d1, d2) and hourly ones
# in [h1, d1) and [d2, h2).
_ROLLUP_SPANS = {
    RollupTier.HOURS: (("hourly_rollups", "h1", "h2"),),
    RollupTier.DAYS: (
        ("hourly_rollups", "h1", "d1"),
        ("daily_rollups", "d1", "d2"),
        ("hourly_rollups", "d2", "h2"),
    ),
}
_BOUND = f"{QUANTITY_KWH_MAX_MAGNITUDE!r}::float8"


def summed(guarded: bool, total: str = "total", minimum: str = "minimum", maximum: str = "maximum") -> str:
    """The sum of source rows' totals; `guarded` sums only the rows all of whose readings lie
    within the bound a reading is refused beyond (limits.py).

    PostgreSQL's float8 sum raises (22003) where finite values add up past a double; only
    readings stored beyond the bound (before it was checked) come near that. A statement that
    raised is asked again guarded: the totals of buckets holding such readings are not used
    then (domain/aggregation.credible_total), every other bucket's is the same as unguarded.
    The guard is not always on because it costs per row.
    """
    if not guarded:
        return f"sum({total})"
    return f"sum(CASE WHEN {minimum} >= -{_BOUND} AND {maximum} <= {_BOUND} THEN {total} END)"


def aggregates(guarded: bool) -> str:
    """The grouping of source rows, where readings may be rollups (see summed)."""
    return (
        f"{summed(guarded)} AS total, min(minimum) AS minimum, max(maximum) AS maximum,"
        " sum(reading_count)::bigint AS reading_count"
    )


def _floor(unit: str, instant: str) -> str:
    return f"date_bin(INTERVAL '1 {unit}', {instant}, {_EPOCH})"


def _ceil(unit: str, instant: str) -> str:
    before = f"({instant}) - INTERVAL '1 microsecond'"
    return f"({_floor(unit, before)} + INTERVAL '1 {unit}')"


def cuts_sql(lo: str, hi: str, plan: RollupPlan, rolled_up: str) -> str:
    """A one-row query of the window's bounds and cuts (lo, hi and those of CUT_NAMES of the
    plan's tier) and of `rolled_up`."""
    hours = f"""
        SELECT lo, hi, h1, greatest({_floor("hour", "hi")}, h1) AS h2
        FROM (
            SELECT lo, hi, least({_ceil("hour", "lo")}, hi) AS h1
            FROM (SELECT {lo} AS lo, {hi} AS hi) AS window_bounds
        ) AS first_hour
    """
    if plan.tier is RollupTier.HOURS:
        cuts = hours
    else:
        cuts = f"""
            SELECT lo, hi, h1, h2, d1, greatest({_floor("day", "h2")}, d1) AS d2
            FROM (
                SELECT lo, hi, h1, h2, least({_ceil("day", "h1")}, h2) AS d1 FROM ({hours}) AS hours
            ) AS first_day
        """
    return f"SELECT cut.*, coalesce(({rolled_up}), false) AS rolled_up FROM ({cuts}) AS cut"


def _cut(name: str) -> str:
    return f"(SELECT {name} FROM cuts)"


def _at(key: str, instant: str) -> str:
    """The bucket key expression evaluated at `instant` instead of a row's time."""
    return re.sub(r"\btime\b", instant, key)


def single_series_source(plan: RollupPlan, fixed_key: str | None) -> str:
    """The source rows of series $1 in the window of the `cuts` CTE (see cuts_sql);
    `fixed_key` is the bucket key where buckets are all of one width (see
    aggregates._bucket_key_and_start), which checks an hour by arithmetic alone."""
    series = "series_id = $1"
    rolled_up, not_rolled_up = _cut("rolled_up"), f"NOT {_cut('rolled_up')}"

    def readings(low: str, high: str, condition: str) -> str:
        return f"""
            SELECT {_READING_COLUMNS} FROM readings
            WHERE {series} AND time >= {_cut(low)} AND time < {_cut(high)} AND {condition}"""

    def rollups(table: str, low: str, high: str) -> str:
        return f"""
            SELECT {_ROLLUP_COLUMNS} FROM {table}
            WHERE {series} AND bucket_start >= {_cut(low)} AND bucket_start < {_cut(high)} AND {rolled_up}"""

    branches = [
        readings("lo", "hi", not_rolled_up),
        readings("lo", "h1", rolled_up),
        readings("h2", "hi", rolled_up),
    ]
    if not plan.check_hours:
        branches += [rollups(table, low, high) for table, low, high in _ROLLUP_SPANS[plan.tier]]
    else:
        # Checked hours serve days and longer: an hour lies in one bucket where its first and
        # last instants do; with buckets of one width that is plain arithmetic, elsewhere the
        # zone's offset must be the same at both ends (no zone changes it twice within a day)
        # and so must the local date.
        almost_an_hour = "INTERVAL '59 minutes 59.999999 seconds'"
        if fixed_key is not None:
            last = f"(bucket_start + {almost_an_hour})"
            whole = f"{_at(fixed_key, 'bucket_start')} = {_at(fixed_key, last)}"
        else:
            local_start = "(bucket_start AT TIME ZONE $2)"
            local_end = f"((bucket_start + {almost_an_hour}) AT TIME ZONE $2)"
            whole = (
                f"{local_end} = {local_start} + {almost_an_hour} AND {local_end}::date = {local_start}::date"
            )
        checked = f"""
            SELECT bucket_start, total, minimum, maximum, reading_count, {whole} AS whole
            FROM hourly_rollups
            WHERE {series} AND bucket_start >= {_cut("h1")} AND bucket_start < {_cut("h2")} AND {rolled_up}"""
        branches.append(f"SELECT {_ROLLUP_COLUMNS} FROM checked_hours WHERE whole")
        branches.append(
            f"""
            SELECT r.time, r.quantity_kwh, r.quantity_kwh, r.quantity_kwh, 1
            FROM checked_hours AS hours
            JOIN readings AS r ON r.{series}
             AND r.time >= hours.bucket_start AND r.time < hours.bucket_start + INTERVAL '1 hour'
            WHERE NOT hours.whole"""
        )
        return f"WITH checked_hours AS ({checked})\n" + "\nUNION ALL\n".join(branches)
    return "\nUNION ALL\n".join(branches)


# The spans of a rolled-up series' window and what each is read from, in the order of the
# cuts (see the module's docstring): readings at the edges, rollups between.
def rolled_up_spans(tier: RollupTier) -> tuple[tuple[str, str, str], ...]:
    """(table, low cut, high cut) of each span of a rolled-up series' window."""
    return (("readings", "lo", "h1"), *_ROLLUP_SPANS[tier], ("readings", "h2", "hi"))


def portfolio_source(
    carried: str, selection: str, window: tuple[str, str], spans: tuple[tuple[str, str, str], ...] | None
) -> str:
    """The source rows of the selected series in the window [lo, hi), each with the series id
    and the `carried` columns (the group values, of the catalog row `s`) first.

    `selection` picks the catalog rows. Without `spans` every series is read from its readings;
    with them a rolled-up series is read from each span's table (see rolled_up_spans, with the
    bounds as SQL), and the caller leaves out the empty ones: each branch costs planning, and
    on Citus each shard's task plans every branch again.
    """
    lo, hi = window

    def readings(low: str, high: str, condition: str) -> str:
        return f"""
            SELECT {carried}r.series_id, r.time, r.quantity_kwh AS total, r.quantity_kwh AS minimum,
                   r.quantity_kwh AS maximum, 1 AS reading_count
            FROM readings AS r JOIN series AS s ON s.series_id = r.series_id
            WHERE {selection} AND r.time >= {low} AND r.time < {high} {condition}"""

    if spans is None:
        return readings(lo, hi, "")

    def rollups(table: str, low: str, high: str) -> str:
        return f"""
            SELECT {carried}h.series_id, h.bucket_start, h.total, h.minimum, h.maximum, h.reading_count
            FROM {table} AS h JOIN series AS s ON s.series_id = h.series_id
            WHERE {selection} AND s.rolled_up AND h.bucket_start >= {low} AND h.bucket_start < {high}"""

    branches = [readings(lo, hi, "AND NOT s.rolled_up")]
    for table, low, high in spans:
        if table == "readings":
            branches.append(readings(low, high, "AND s.rolled_up"))
        else:
            branches.append(rollups(table, low, high))
    return "\nUNION ALL\n".join(branches)
