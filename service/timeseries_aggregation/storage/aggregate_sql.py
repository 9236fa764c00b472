"""A page's plan (domain/query_plan.py) rendered as SQL: nothing here decides a bucket.

Rows are put in the plan's buckets by its grid: by arithmetic where the buckets are all of
one width (date_bin), else by counting the boundaries at or before a row's time
(width_bucket over the boundaries as a timestamptz[] parameter). Each row of the answer is a
bucket's number in the grid with its figures.

Every source row has the columns (time, total, minimum, maximum, reading_count): a reading is
a row of one, at its own time; a rollup row sums its hour (day) at the hour's (day's) start,
and the plan reads one only where no boundary cuts it.
"""

import json
from dataclasses import dataclass, field

from timeseries_aggregation.domain.aggregation import GROUP_BY_SERIES, AggregateQuery
from timeseries_aggregation.domain.bucket_grid import ExplicitGrid, FixedGrid
from timeseries_aggregation.domain.query_plan import FirstReadingProbe, PagePlan, RollupCuts
from timeseries_aggregation.limits import QUANTITY_KWH_MAX_MAGNITUDE

_BOUND = f"{QUANTITY_KWH_MAX_MAGNITUDE!r}::float8"
_READING_COLUMNS = (
    "time, quantity_kwh AS total, quantity_kwh AS minimum, quantity_kwh AS maximum, 1 AS reading_count"
)
_ROLLUP_COLUMNS = "bucket_start AS time, total, minimum, maximum, reading_count"


@dataclass(slots=True)
class Parameters:
    """Named parameters rendered as asyncpg's numbered ones; a name given twice is one
    parameter."""

    values: list[object] = field(default_factory=list)
    _numbers: dict[str, int] = field(default_factory=dict)

    def __call__(self, name: str, value: object, sql_type: str) -> str:
        number = self._numbers.get(name)
        if number is None:
            self.values.append(value)
            number = self._numbers[name] = len(self.values)
        return f"${number}::{sql_type}"


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


def _aggregates(guarded: bool) -> str:
    return (
        f"{summed(guarded)} AS total, min(minimum) AS minimum, max(maximum) AS maximum,"
        " sum(reading_count)::bigint AS reading_count"
    )


@dataclass(frozen=True, slots=True)
class _Buckets:
    """How rows are put in the grid's buckets: the per-row key (of `{time}`), and the bucket
    number from a bucket's key, computed once per bucket."""

    key: str
    number: str

    def of(self, column: str) -> str:
        return self.key.replace("{time}", column)


def _buckets(plan: PagePlan, parameters: Parameters) -> _Buckets:
    grid = plan.grid
    if isinstance(grid, FixedGrid):
        width, origin = grid.width_seconds, grid.origin_unix_seconds
        key = f"date_bin(INTERVAL '{width} seconds', {{time}}, to_timestamp({origin}))"
        return _Buckets(key, f"(extract(epoch FROM bucket_key)::bigint - {origin}) / {width}")
    assert isinstance(grid, ExplicitGrid)
    boundaries = parameters("boundaries", grid.boundaries, "timestamptz[]")
    return _Buckets(f"width_bucket({{time}}, {boundaries}) - 1", "bucket_key")


def _cursor_key(plan: PagePlan, parameters: Parameters, number: int) -> str:
    """The key of the grid's bucket `number`, as rows' keys are compared with it."""
    grid = plan.grid
    if isinstance(grid, FixedGrid):
        return f"to_timestamp({grid.start_seconds(number)})"
    return parameters("cursor_bucket", number, "integer")


def series_page_sql(
    plan: PagePlan, recorded_caller: str | None, rollups: bool, guarded: bool
) -> tuple[str, list[object]]:
    """One page of buckets of one series, and (given the caller to record, on a query's first
    page) the query's history record in the same statement.

    Columns: bucket number (NULL in the one row of a page without buckets), total, minimum,
    maximum, reading count; then the series's declared reading interval, whether a reading
    lies past the window, whether the series is rolled up, and whether the catalog knows it
    at all (when it does not, the call is NOT_FOUND and the history entry is not written).
    Without `rollups` the statement reads readings only, whatever the plan says (a statement
    that plans in a fraction of the time where the series is not rolled up anyway).
    """
    query = plan.query
    p = Parameters()
    series = p("series_id", query.series_id, "text")
    buckets = _buckets(plan, p)
    lo = p("window_start", plan.window_start, "timestamptz")
    hi = p("window_end", plan.window_end, "timestamptz")
    limit = p("limit", plan.page_size + 1, "integer")
    cuts = plan.rollups if rollups else None
    if cuts is None:
        grouped = f"""
            SELECT {buckets.of("time")} AS bucket_key,
                   {summed(guarded, "quantity_kwh", "quantity_kwh", "quantity_kwh")} AS total,
                   min(quantity_kwh) AS minimum, max(quantity_kwh) AS maximum, count(*) AS reading_count
            FROM readings
            WHERE series_id = {series} AND time >= {lo} AND time < {hi}
            GROUP BY 1"""
    else:
        source = _series_source(cuts, series, lo, hi, p)
        grouped = f"""
            SELECT {buckets.of("time")} AS bucket_key, {_aggregates(guarded)}
            FROM ({source}) AS source
            GROUP BY 1"""
    if plan.beyond_end is not None:
        beyond_end = p("beyond_end", plan.beyond_end, "timestamptz")
        readings_beyond = f"""EXISTS (
            SELECT 1 FROM readings WHERE series_id = {series} AND time >= {hi} AND time < {beyond_end}
        )"""
    else:
        readings_beyond = "false"
    recorded = ""
    if recorded_caller is not None:
        columns = _history_columns(query, plan.page_size, recorded_caller, p)
        recorded = f"""
        , recorded AS (
            {INSERT_HISTORY}
            SELECT {columns["series_id"]}, {columns["granularity"]}, {columns["start_time"]},
                   {columns["end_time"]}, {columns["time_zone"]}, {columns["page_size"]}, false,
                   least(count(*), {columns["page_size"]}), {columns["caller_name"]},
                   NULL, NULL, '{{}}'::text[], false
            FROM page
            HAVING EXISTS (SELECT FROM series WHERE series_id = {series})
        )"""
    sql = f"""
        WITH catalog AS (
            SELECT reading_interval_seconds, rolled_up FROM series WHERE series_id = {series}
        ), page AS (
            SELECT bucket_key, total, minimum, maximum, reading_count
            FROM ({grouped}) AS grouped
            ORDER BY bucket_key
            LIMIT {limit}
        ){recorded}
        SELECT {buckets.number}, total, minimum, maximum, reading_count,
               catalog.reading_interval_seconds,
               {readings_beyond},
               coalesce(catalog.rolled_up, false),
               catalog.rolled_up IS NOT NULL
        FROM (SELECT) AS one
        LEFT JOIN catalog ON true
        LEFT JOIN page ON true
        ORDER BY bucket_key
    """
    return sql, p.values


def _series_source(cuts: RollupCuts, series: str, lo: str, hi: str, p: Parameters) -> str:
    """The source rows of one series in [lo, hi): its readings where it is not rolled up; else
    readings at the window's edges and in the cut hours, rollups between."""
    rolled_up = "coalesce((SELECT rolled_up FROM catalog), false)"
    (_, h1), (h2, _) = cuts.edges
    h1_sql, h2_sql = p("hours_start", h1, "timestamptz"), p("hours_end", h2, "timestamptz")
    branches = [
        f"""SELECT {_READING_COLUMNS} FROM readings
            WHERE series_id = {series} AND time >= {lo} AND time < {hi} AND NOT {rolled_up}""",
        f"""SELECT {_READING_COLUMNS} FROM readings
            WHERE series_id = {series} AND time >= {lo} AND time < {h1_sql} AND {rolled_up}""",
        f"""SELECT {_READING_COLUMNS} FROM readings
            WHERE series_id = {series} AND time >= {h2_sql} AND time < {hi} AND {rolled_up}""",
    ]
    not_cut = ""
    if cuts.cut_hours:
        cut = p("cut_hours", list(cuts.cut_hours), "timestamptz[]")
        # Membership by binary search in the sorted list: ANY() would compare with every one.
        not_cut = f"AND coalesce(({cut})[width_bucket(bucket_start, {cut})] <> bucket_start, true)"
        branches.append(
            f"""SELECT r.time, r.quantity_kwh, r.quantity_kwh, r.quantity_kwh, 1
            FROM unnest({cut}) AS cut(hour_start)
            JOIN readings AS r ON r.series_id = {series}
             AND r.time >= cut.hour_start AND r.time < cut.hour_start + INTERVAL '1 hour'
            WHERE {rolled_up}"""
        )
    for index, span in enumerate(cuts.spans):
        low = p(f"span_{index}_start", span.start, "timestamptz")
        high = p(f"span_{index}_end", span.end, "timestamptz")
        branches.append(
            f"""SELECT {_ROLLUP_COLUMNS} FROM {span.table.value}
            WHERE series_id = {series} AND bucket_start >= {low} AND bucket_start < {high}
              AND {rolled_up} {not_cut}"""
        )
    return "\nUNION ALL\n".join(branches)


def portfolio_page_sql(plan: PagePlan, guarded: bool) -> tuple[str, list[object]]:
    """One page of the buckets of the selected series, in groups, in (group, bucket) order.

    Columns: bucket number, total, minimum, maximum, reading count, series count, the group's
    values. Group values and their order are those of text compared by code point, on every
    engine.
    """
    query = plan.query
    p = Parameters()
    selection = _selection(query, p)
    groups = _group_values(query, p, "s")
    names = [f"g{index}" for index in range(len(groups))]
    buckets = _buckets(plan, p)
    lo = p("window_start", plan.window_start, "timestamptz")
    hi = p("window_end", plan.window_end, "timestamptz")
    limit = p("limit", plan.page_size + 1, "integer")
    cursor_filter = ""
    if plan.cursor is not None:
        group, number = plan.cursor
        cursor_row = [
            f'({p("cursor_group", list(group), "text[]")})[{index + 1}] COLLATE "C"'
            for index in range(len(names))
        ]
        sorted_row = [f'{name} COLLATE "C"' for name in names]
        cursor_key = _cursor_key(plan, p, number)
        cursor_filter = (
            f"WHERE ({', '.join([*sorted_row, 'bucket_key'])}) > ({', '.join([*cursor_row, cursor_key])})"
        )
    group_columns = "".join(
        f"{expression} AS {name}, " for expression, name in zip(groups, names, strict=True)
    )
    carried = "".join(f"{name}, " for name in names)
    positions = "".join(f"{position}, " for position in range(1, len(names) + 1))
    order = "".join(f'{name} COLLATE "C", ' for name in names)
    values_array = f"ARRAY[{', '.join(names)}]::text[]" if names else "'{}'::text[]"
    source = _portfolio_source(group_columns, selection, lo, hi, plan.rollups, p)
    sql = f"""
        WITH page AS (
            SELECT {carried}bucket_key, total, minimum, maximum, reading_count, series_count
            FROM (
                SELECT {carried}{buckets.of("time")} AS bucket_key, {_aggregates(guarded)},
                       count(DISTINCT series_id) AS series_count
                FROM ({source}) AS source
                GROUP BY {positions}bucket_key
            ) AS grouped
            {cursor_filter}
            ORDER BY {order}bucket_key
            LIMIT {limit}
        )
        SELECT {buckets.number}, total, minimum, maximum, reading_count, series_count, {values_array}
        FROM page
        ORDER BY {order}bucket_key
    """
    return sql, p.values


def _portfolio_source(
    carried: str, selection: str, lo: str, hi: str, cuts: RollupCuts | None, p: Parameters
) -> str:
    """The source rows of the selected series in [lo, hi), each with the series id and the
    `carried` columns (the group values, of the catalog row `s`) first: readings, or for a
    rolled-up series its rollups between the edges (the plan gives no cut hours here)."""

    def readings(low: str, high: str, condition: str) -> str:
        return f"""
            SELECT {carried}r.series_id, r.time, r.quantity_kwh AS total, r.quantity_kwh AS minimum,
                   r.quantity_kwh AS maximum, 1 AS reading_count
            FROM readings AS r JOIN series AS s ON s.series_id = r.series_id
            WHERE {selection} AND r.time >= {low} AND r.time < {high} {condition}"""

    if cuts is None:
        return readings(lo, hi, "")
    assert not cuts.cut_hours
    (edge_start, h1), (h2, edge_end) = cuts.edges
    branches = [readings(lo, hi, "AND NOT s.rolled_up")]
    # Each branch costs planning, and on Citus each shard's task plans every branch again:
    # empty ones are left out.
    if edge_start < h1:
        branches.append(readings(lo, p("hours_start", h1, "timestamptz"), "AND s.rolled_up"))
    for index, span in enumerate(cuts.spans):
        low = p(f"span_{index}_start", span.start, "timestamptz")
        high = p(f"span_{index}_end", span.end, "timestamptz")
        branches.append(
            f"""
            SELECT {carried}h.series_id, h.bucket_start, h.total, h.minimum, h.maximum, h.reading_count
            FROM {span.table.value} AS h JOIN series AS s ON s.series_id = h.series_id
            WHERE {selection} AND s.rolled_up AND h.bucket_start >= {low} AND h.bucket_start < {high}"""
        )
    if h2 < edge_end:
        branches.append(readings(p("hours_end", h2, "timestamptz"), hi, "AND s.rolled_up"))
    return "\nUNION ALL\n".join(branches)


def _selection(query: AggregateQuery, p: Parameters) -> str:
    """The condition on catalog rows `s` that picks the query's series."""
    selector = query.members
    selection = f"s.labels @> {p('labels', json.dumps(selector.labels), 'jsonb')}"
    if selector.series_ids is not None:
        selection += f" AND s.series_id = ANY({p('series_ids', list(selector.series_ids), 'text[]')})"
    return selection


def _group_values(query: AggregateQuery, p: Parameters, catalog: str) -> list[str]:
    """SQL for each group_by entry's value of a series of the `catalog` alias: its id, or the
    grouped label ('' where the series lacks it)."""
    values = []
    for index, key in enumerate(query.group_by):
        if key == GROUP_BY_SERIES:
            values.append(f"{catalog}.series_id")
        else:
            keys = p("group_by", list(query.group_by), "text[]")
            values.append(f"coalesce({catalog}.labels ->> ({keys})[{index + 1}], '')")
    return values


def group_intervals_sql(query: AggregateQuery) -> tuple[str, list[object]]:
    """Per group of the selected series, how many declare each reading interval; with empty
    buckets also the groups (and series) declaring none, with a NULL interval."""
    p = Parameters()
    selection = _selection(query, p)
    groups = _group_values(query, p, "s")
    values = f"ARRAY[{', '.join(groups)}]::text[]" if groups else "'{}'::text[]"
    declared = "" if query.include_empty_buckets else "AND reading_interval_seconds IS NOT NULL"
    sql = f"""
        SELECT {values} AS group_values, reading_interval_seconds, count(*) AS series
        FROM series AS s
        WHERE {selection} {declared}
        GROUP BY 1, 2
    """
    return sql, p.values


def selected_span_sql(query: AggregateQuery) -> tuple[str, list[object]]:
    """The first and last reading time of all selected series."""
    p = Parameters()
    selection = _selection(query, p)
    sql = f"SELECT min(first_reading_time), max(last_reading_time) FROM series AS s WHERE {selection}"
    return sql, p.values


def first_reading_sql(probe: FirstReadingProbe) -> tuple[str, list[object]]:
    """Whether the catalog knows the series, its first reading in the probe's range, and the
    average time between its readings."""
    p = Parameters()
    series = p("series_id", probe.series_id, "text")
    start, end = p("start", probe.start, "timestamptz"), p("end", probe.end, "timestamptz")
    sql = f"""
        SELECT catalog.series_id IS NOT NULL, first.time, catalog.spacing
        FROM (SELECT) AS one
        LEFT JOIN (
            SELECT series_id,
                   (last_reading_time - first_reading_time) / greatest(reading_count - 1, 1) AS spacing
            FROM series WHERE series_id = {series}
        ) AS catalog ON true
        LEFT JOIN (
            -- Not min(time): with a table's statistics still unknown, the planner may
            -- aggregate the whole range for it; ordered and limited, it reads one row.
            SELECT time FROM readings
            WHERE series_id = {series} AND time >= {start} AND time < {end}
            ORDER BY time
            LIMIT 1
        ) AS first ON true
    """
    return sql, p.values


# A history entry's columns, in the order every way of recording a call gives them.
INSERT_HISTORY = """
    INSERT INTO query_history (
        series_id, granularity, start_time, end_time, time_zone,
        page_size, continued_page, bucket_count, caller_name,
        selector_series_ids, selector_labels, group_by, include_empty_buckets
    )"""


def _history_columns(
    query: AggregateQuery, page_size: int, caller_name: str, p: Parameters
) -> dict[str, str]:
    return {
        "series_id": p("series_id", query.series_id, "text"),
        "granularity": p("granularity", query.granularity.value, "text"),
        "start_time": p("start_time", query.time_range.start_time, "timestamptz"),
        "end_time": p("end_time", query.time_range.end_time, "timestamptz"),
        "time_zone": p("time_zone", query.time_zone, "text"),
        "page_size": p("page_size", page_size, "integer"),
        "caller_name": p("caller_name", caller_name, "text"),
    }
