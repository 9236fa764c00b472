"""The distinct (series, time) keys of one ingest stream, counted chunk by chunk.

A committed stream stores each of its keys once, with the value sent last, so the number of
distinct keys it sent is the number of keys it wrote. The database cannot say it cheaply: a
key sent again in a later chunk is written twice, and whether a row was written earlier by the
same stream or was there before it is not something every engine can tell (TimescaleDB writes
decompressed rows as the stream's own, Citus keeps row versions on its workers).

So the stream keeps its keys, compactly: per series, runs of evenly spaced times (start, step,
count), whose spans do not overlap. Meter readings come at a fixed interval, so a meter's
readings in a stream are a run or a few (one more per gap); a stream that sends each series in
time order only ever extends or appends runs. Irregular times cost a run each at worst, and
past MAX_KEY_RUNS runs the count is given up (None) rather than the server's memory.
"""

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from timeseries_aggregation.domain.batch import ReadingBatch

# 24 bytes a run: at most 24 MiB per stream.
MAX_KEY_RUNS = 1_000_000

Int64s = npt.NDArray[np.int64]


@dataclass(slots=True)
class _Runs:
    """Times as runs start, start + step, ... (count times), in order of start."""

    starts: Int64s
    steps: Int64s
    counts: Int64s

    def __len__(self) -> int:
        return len(self.starts)

    def ends(self) -> Int64s:
        return self.starts + self.steps * (self.counts - 1)

    def slice(self, first: int, stop: int) -> "_Runs":
        return _Runs(self.starts[first:stop], self.steps[first:stop], self.counts[first:stop])

    def times(self) -> Int64s:
        """Every time of the runs, in order."""
        if len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        offsets = np.arange(int(self.counts.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(self.counts) - self.counts, self.counts
        )
        return np.repeat(self.starts, self.counts) + np.repeat(self.steps, self.counts) * offsets


def _concatenate(parts: list[_Runs]) -> _Runs:
    return _Runs(
        *(
            np.concatenate(column)
            for column in zip(*((r.starts, r.steps, r.counts) for r in parts), strict=True)
        )
    )


def _runs(groups: npt.NDArray[np.integer], times: Int64s) -> tuple[_Runs, npt.NDArray[np.intp]]:
    """Distinct `times`, sorted by group and then by time, as runs that never span two groups;
    also each run's first position in `times`.

    A time joins the run of the time before it when both are in one group and the step to it
    is the step to that time; the second time of a group always joins the first.
    """
    count = len(times)
    new_group = np.ones(count, dtype=bool)
    new_group[1:] = groups[1:] != groups[:-1]
    steps_before = np.zeros(count, dtype=np.int64)
    steps_before[1:] = np.diff(times)
    begins = new_group.copy()
    begins[2:] |= ~new_group[1:-1] & (steps_before[2:] != steps_before[1:-1])
    starts_at = np.flatnonzero(begins)
    counts = np.diff(np.append(starts_at, count)).astype(np.int64)
    steps = np.ones(len(starts_at), dtype=np.int64)
    longer = counts > 1
    steps[longer] = steps_before[starts_at[longer] + 1]
    return _Runs(times[starts_at], steps, counts), starts_at


def _membership(
    runs: _Runs, times: Int64s
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """For each time: the run whose span could hold it (-1: none), whether the time lies within
    that run's span, and whether it is one of that run's times."""
    candidate = np.searchsorted(runs.starts, times, side="right") - 1
    safe = np.maximum(candidate, 0)
    within = (candidate >= 0) & (times <= runs.ends()[safe])
    member = within & ((times - runs.starts[safe]) % runs.steps[safe] == 0)
    return candidate, within, member


def _appended(known: _Runs, later: _Runs) -> _Runs:
    """Runs `later`, all after the runs `known`, appended; the first of them extends the last
    known run (in place: `known` owns its arrays) when it continues its steps."""
    start, step, count = int(known.starts[-1]), int(known.steps[-1]), int(known.counts[-1])
    next_start, next_step, next_count = int(later.starts[0]), int(later.steps[0]), int(later.counts[0])
    gap = next_start - (start + step * (count - 1))
    joined_step = step if count > 1 else gap
    if gap == joined_step and (next_count == 1 or next_step == joined_step):
        known.steps[-1] = joined_step
        known.counts[-1] = count + next_count
        later = later.slice(1, len(later))
        if len(later) == 0:
            return known
    return _concatenate([known, later])


@dataclass(slots=True)
class StreamKeys:
    """Counts the distinct keys of a stream's chunks; `count` is None once over the bound."""

    max_runs: int = MAX_KEY_RUNS
    count: int | None = 0
    _series: dict[str, _Runs] = field(default_factory=dict)
    # The latest time of each series: a chunk whose times all come later only appends.
    _latest: dict[str, int] = field(default_factory=dict)
    _run_count: int = 0

    def add(self, chunk: ReadingBatch) -> None:
        """Count the keys of a chunk sorted by key (ReadingBatch.sorted_by_key) not seen before."""
        if self.count is None or len(chunk) == 0:
            return
        index, times = chunk.series_index, chunk.time_unix_micros
        distinct = np.ones(len(index), dtype=bool)
        distinct[1:] = (index[1:] != index[:-1]) | (times[1:] != times[:-1])
        index, times = index[distinct], times[distinct]
        chunk_runs, runs_at = _runs(index, times)
        series_starts = np.flatnonzero(np.concatenate(([True], index[1:] != index[:-1])))
        series_ends = np.append(series_starts[1:], len(index))
        run_firsts = np.searchsorted(runs_at, series_starts)
        run_stops = np.append(run_firsts[1:], len(runs_at))
        latest_times = times[series_ends - 1].tolist()
        for start, end, run_first, run_stop, position, first_time, latest in zip(
            series_starts.tolist(),
            series_ends.tolist(),
            run_firsts.tolist(),
            run_stops.tolist(),
            index[series_starts].tolist(),
            times[series_starts].tolist(),
            latest_times,
            strict=True,
        ):
            series_id = chunk.series_ids[position]
            new_runs = chunk_runs.slice(run_first, run_stop)
            known = self._series.get(series_id)
            fresh = end - start
            if known is None:
                stored = _Runs(new_runs.starts.copy(), new_runs.steps.copy(), new_runs.counts.copy())
            elif first_time > self._latest[series_id]:
                stored = _appended(known, new_runs)  # the usual case: the series goes on
            else:
                stored, fresh = _merged(known, times[start:end])
            self._run_count += len(stored) - (len(known) if known is not None else 0)
            self._series[series_id] = stored
            self._latest[series_id] = max(latest, self._latest.get(series_id, latest))
            self.count += fresh
        if self._run_count > self.max_runs:
            self.count = None
            self._series.clear()
            self._latest.clear()


def _merged(known: _Runs, times: Int64s) -> tuple[_Runs, int]:
    """Runs `known` with sorted distinct `times` added, and how many of those are new."""
    candidate, within, member = _membership(known, times)
    fresh = times[~member]
    if len(fresh) == 0:
        return known, 0
    # Runs with a new time inside their span are taken apart and made again with it.
    broken = np.unique(candidate[within & ~member])
    kept = np.ones(len(known), dtype=bool)
    kept[broken] = False
    remaining = _Runs(known.starts[kept], known.steps[kept], known.counts[kept])
    loose = np.sort(np.concatenate([fresh, *(known.slice(i, i + 1).times() for i in broken.tolist())]))
    # The loose times fall between the remaining runs; a new run stays within one such gap.
    gaps = np.searchsorted(remaining.starts, loose, side="right")
    made, _ = _runs(gaps, loose)
    combined = _concatenate([remaining, made])
    order = np.argsort(combined.starts, kind="stable")
    return _Runs(combined.starts[order], combined.steps[order], combined.counts[order]), len(fresh)
