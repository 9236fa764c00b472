"""Counting a stream's distinct (series, time) keys chunk by chunk, in bounded memory."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timeseries_aggregation.domain.batch import ReadingBatch
from timeseries_aggregation.domain.keys import StreamKeys

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

QUARTER_HOUR = 900_000_000


def chunk(keys: list[tuple[str, int]]) -> ReadingBatch:
    """A chunk of readings with these keys, sorted by key as the writer sorts its chunks."""
    series_ids = sorted({series_id for series_id, _ in keys})
    position = {series_id: index for index, series_id in enumerate(series_ids)}
    return ReadingBatch(
        series_ids=series_ids,
        series_index=np.array([position[series_id] for series_id, _ in keys], dtype=np.int32),
        time_unix_micros=np.array([time for _, time in keys], dtype=np.int64),
        quantity_kwh=np.zeros(len(keys)),
    ).sorted_by_key()


def counted(chunks: list[list[tuple[str, int]]], max_runs: int = 1_000_000) -> int | None:
    keys = StreamKeys(max_runs=max_runs)
    for keys_of_chunk in chunks:
        keys.add(chunk(keys_of_chunk))
    return keys.count


# Times on a quarter-hour grid with a few off it, so that runs form, break and interleave.
times = st.one_of(
    st.integers(0, 40).map(lambda step: step * QUARTER_HOUR),
    st.integers(0, 40 * QUARTER_HOUR),
)
keys_of_chunks = st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), times), max_size=30)
stream_keys = st.lists(keys_of_chunks, max_size=8)


@given(stream_keys)
@settings(max_examples=300)
def test_the_count_is_the_number_of_distinct_keys(chunks: list[list[tuple[str, int]]]) -> None:
    assert counted(chunks) == len({key for keys in chunks for key in keys})


def test_a_key_repeated_in_a_later_chunk_counts_once() -> None:
    first = [("m1", hour * 3_600_000_000) for hour in range(24)]
    again = [("m1", 5 * 3_600_000_000), ("m2", 0), ("m1", 24 * 3_600_000_000)]

    assert counted([first, again]) == 26


def test_readings_in_time_order_take_a_run_per_series_however_many_chunks() -> None:
    keys = StreamKeys()
    for day in range(30):
        keys.add(chunk([(meter, (day * 96 + i) * QUARTER_HOUR) for meter in ("a", "b") for i in range(96)]))

    assert keys.count == 30 * 96 * 2
    assert keys._run_count == 2


def test_past_the_bound_the_count_is_given_up() -> None:
    irregular = [("m1", time * time) for time in range(1, 200)]

    assert counted([irregular[:100], irregular[100:]], max_runs=50) is None
    assert counted([irregular[:100], irregular[100:]], max_runs=200) == 199
