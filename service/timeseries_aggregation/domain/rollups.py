"""Rollups in the domain's terms: which hours a stream touched, which series are dense enough to
be rolled up, and which rollup a query's buckets can be made of.

Rollups hold, per series, the sum, minimum, maximum and count of its readings in each UTC hour
and each UTC day. A bucket made of whole UTC hours (every hour and coarser bucket of a zone
whose offset is a whole number of hours) can be summed from hourly rollups instead of from its
readings, and one made of whole UTC days (days, weeks, months, quarters and years of a zone
that is always at UTC) from daily rollups.
"""

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from timeseries_aggregation.domain.batch import ReadingBatch

HOUR_MICROS = 3_600_000_000
DAY_MICROS = 24 * HOUR_MICROS
# Beyond this many separate runs of touched hours in one series, a stream remembers only their
# overall span: a bound on memory for streams of scattered corrections, at the price of
# recomputing the hours between them.
MAX_RUNS_PER_SERIES = 4_096


@dataclass(slots=True)
class TouchedHours:
    """The UTC hours in which a stream wrote readings, per series, as runs [start, end) of hour
    numbers since the Unix epoch; and which series it gave more than one reading in an hour."""

    runs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    dense: set[str] = field(default_factory=set)

    def add(self, chunk: ReadingBatch) -> None:
        """Note the hours of a chunk sorted by key (series, then time)."""
        index = chunk.series_index
        if len(index) == 0:
            return
        times = chunk.time_unix_micros
        hours = times // HOUR_MICROS
        new_series = np.concatenate(([True], index[1:] != index[:-1]))
        starts = np.flatnonzero(new_series)
        # A reading opens a run where its series starts or its hour is more than one after the
        # previous reading's.
        opens = new_series | np.concatenate(([True], hours[1:] - hours[:-1] > 1))
        # Distinct instants (a key may repeat in an upsert chunk) and distinct hours per series.
        new_time = new_series | np.concatenate(([True], times[1:] != times[:-1]))
        new_hour = new_series | np.concatenate(([True], hours[1:] != hours[:-1]))
        instants = np.add.reduceat(new_time.astype(np.int64), starts)
        distinct_hours = np.add.reduceat(new_hour.astype(np.int64), starts)
        run_starts = np.flatnonzero(opens)
        run_ends = np.append(run_starts[1:], len(index))
        run_series = np.searchsorted(starts, run_starts, side="right") - 1
        by_series: dict[int, list[tuple[int, int]]] = {}
        run_lasts = (run_ends - 1).tolist()
        for position, first, last in zip(run_series.tolist(), run_starts.tolist(), run_lasts, strict=True):
            by_series.setdefault(position, []).append((int(hours[first]), int(hours[last]) + 1))
        for position, start in enumerate(starts.tolist()):
            series_id = chunk.series_ids[int(index[start])]
            if instants[position] > distinct_hours[position]:
                self.dense.add(series_id)
            self._merge(series_id, by_series[position])

    def _merge(self, series_id: str, new_runs: list[tuple[int, int]]) -> None:
        merged = _merged_runs(sorted([*self.runs.get(series_id, []), *new_runs]))
        if len(merged) > MAX_RUNS_PER_SERIES:
            merged = [(merged[0][0], merged[-1][1])]
        self.runs[series_id] = merged


# Hours a stream's additions may hold before it stops gathering them (about 45 bytes each):
# beyond, its series' rollups are made again from the readings instead.
MAX_ADDED_HOURS = 500_000


@dataclass(frozen=True, slots=True)
class HourFigures:
    """Per series and UTC hour (number since the epoch): sum, minimum, maximum and count."""

    series_ids: list[str]
    hours: npt.NDArray[np.int64]
    totals: npt.NDArray[np.float64]
    minimums: npt.NDArray[np.float64]
    maximums: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]


@dataclass(slots=True)
class HourlyAdditions:
    """What a stream's new readings add to each hour of the series it gives more than one
    reading an hour: gathered from the chunks it copied (all new keys), so that their rollups
    grow by these figures instead of being made again from the readings.

    A series counts as `added` only while every reading the stream copied for it is in here:
    one whose readings were copied before it turned dense, or after gathering stopped, is
    recomputed instead.
    """

    _index: dict[str, int] = field(default_factory=dict)
    _parts: list[tuple[npt.NDArray[np.int64], ...]] = field(default_factory=list)
    _quantities: list[tuple[npt.NDArray[np.float64], ...]] = field(default_factory=list)
    _rows: int = 0
    missed: set[str] = field(default_factory=set)
    full: bool = False

    def add(self, chunk: ReadingBatch) -> None:
        """Gather a copied chunk, sorted by key, whose keys are all new."""
        index = chunk.series_index
        if len(index) == 0:
            return
        hours = chunk.time_unix_micros // HOUR_MICROS
        new_series = np.concatenate(([True], index[1:] != index[:-1]))
        new_group = new_series | np.concatenate(([True], hours[1:] != hours[:-1]))
        series_starts = np.flatnonzero(new_series)
        series_ends = np.append(series_starts[1:], len(index))
        groups_per_series = np.add.reduceat(new_group.astype(np.int64), series_starts)
        keep = np.zeros(len(index), dtype=bool)
        spans = zip(series_starts.tolist(), series_ends.tolist(), strict=True)
        for position, (start, end) in enumerate(spans):
            series_id = chunk.series_ids[int(index[start])]
            dense = groups_per_series[position] < end - start
            if self.full or series_id in self.missed or not (dense or series_id in self._index):
                self.missed.add(series_id)
                self._index.pop(series_id, None)
                continue
            self._index.setdefault(series_id, len(self._index))
            keep[start:end] = True
        # Every group of one series and hour, then those of the series gathered.
        group_starts = np.flatnonzero(new_group)
        counts = np.diff(np.append(group_starts, len(index)))
        quantities = chunk.quantity_kwh
        kept = keep[group_starts]
        if not kept.any():
            return
        starts = group_starts[kept]
        ids = np.array([self._index[chunk.series_ids[int(i)]] for i in index[starts]], dtype=np.int64)
        self._parts.append((ids, hours[starts], counts[kept]))
        self._quantities.append(
            (
                np.add.reduceat(quantities, group_starts)[kept],
                np.minimum.reduceat(quantities, group_starts)[kept],
                np.maximum.reduceat(quantities, group_starts)[kept],
            )
        )
        self._rows += len(starts)
        if self._rows > MAX_ADDED_HOURS:
            self.full = True
            self.missed.update(self._index)
            self._index.clear()
            self._parts.clear()
            self._quantities.clear()

    @property
    def added(self) -> set[str]:
        """The series whose every copied reading is gathered here."""
        return set(self._index)

    def figures(self, series_ids: set[str], left_out: dict[str, list[tuple[int, int]]]) -> HourFigures:
        """The gathered figures of `series_ids`, one row per series and hour, without the hours
        in `left_out` (runs per series, to be made again from the readings)."""
        names = sorted(series_id for series_id in series_ids if series_id in self._index)
        if not names or not self._parts:
            whole, real = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
            return HourFigures([], whole, real, real, real, whole)
        ids, hours, counts = (np.concatenate(column) for column in zip(*self._parts, strict=True))
        totals, minimums, maximums = (
            np.concatenate(column) for column in zip(*self._quantities, strict=True)
        )
        wanted = np.full(len(self._index), -1, dtype=np.int64)
        for rank, name in enumerate(names):
            wanted[self._index[name]] = rank
        ranks = wanted[ids]
        keep = ranks >= 0
        for rank, name in enumerate(names):
            for start, end in left_out.get(name, ()):
                keep &= ~((ranks == rank) & (hours >= start) & (hours < end))
        ranks, hours, counts = ranks[keep], hours[keep], counts[keep]
        totals, minimums, maximums = totals[keep], minimums[keep], maximums[keep]
        order = np.lexsort((hours, ranks))
        ranks, hours, counts = ranks[order], hours[order], counts[order]
        totals, minimums, maximums = totals[order], minimums[order], maximums[order]
        if len(ranks) == 0:
            return HourFigures([], hours, totals, minimums, maximums, counts)
        # An hour split between two chunks appears twice: one row each.
        starts = np.flatnonzero(
            np.concatenate(([True], (ranks[1:] != ranks[:-1]) | (hours[1:] != hours[:-1])))
        )
        return HourFigures(
            [names[int(rank)] for rank in ranks[starts]],
            hours[starts],
            np.add.reduceat(totals, starts),
            np.minimum.reduceat(minimums, starts),
            np.maximum.reduceat(maximums, starts),
            np.add.reduceat(counts, starts),
        )


@dataclass(slots=True)
class StreamHours:
    """What a stream did to each hour, for its rollups: every hour it wrote in, those it
    rewrote (through the upsert path, overwrites maybe) and what its copied readings add."""

    touched: TouchedHours = field(default_factory=TouchedHours)
    rewritten: TouchedHours = field(default_factory=TouchedHours)
    additions: HourlyAdditions = field(default_factory=HourlyAdditions)

    def copied(self, chunk: ReadingBatch) -> None:
        """A chunk copied as it is: all new keys."""
        self.touched.add(chunk)
        self.additions.add(chunk)

    def merged(self, chunk: ReadingBatch) -> None:
        """A chunk merged through the upsert path."""
        self.touched.add(chunk)
        self.rewritten.add(chunk)


def _merged_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Runs [start, end) in order of start, those that overlap or meet made one."""
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def day_runs(hour_runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The UTC days (day numbers since the epoch) that hold the hours of `hour_runs` (runs in
    order), as runs."""
    return _merged_runs([(start // 24, -(-end // 24)) for start, end in hour_runs])
