"""PostgreSQL's binary COPY format, built for whole batches with numpy.

Rows are grouped by the byte length of their series id: within a group every row has the
same size, so one structured array holds the group and becomes bytes in one call.
"""

import numpy as np
import numpy.typing as npt

from timeseries_aggregation.domain.batch import ReadingBatch

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _SIGNATURE + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # flags, extension
_TRAILER = (-1).to_bytes(2, "big", signed=True)
# PostgreSQL counts timestamps in microseconds from 2000-01-01T00:00:00Z.
_POSTGRES_EPOCH_UNIX_MICROS = 946_684_800_000_000


def _row_type(series_bytes: int, with_ordinal: bool) -> np.dtype[np.void]:
    fields: list[tuple[str, str]] = [("field_count", ">i2")]
    if with_ordinal:
        fields += [("ordinal_size", ">i4"), ("ordinal", ">i8")]
    fields += [
        ("series_size", ">i4"),
        ("series_id", f"S{series_bytes}"),
        ("time_size", ">i4"),
        ("time", ">i8"),
        ("quantity_size", ">i4"),
        ("quantity_kwh", ">f8"),
    ]
    return np.dtype(fields)


def encode_copy_rows(batch: ReadingBatch, ordinals: npt.NDArray[np.int64] | None = None) -> bytes:
    """The binary COPY payload for columns (series_id, time, quantity_kwh), optionally
    preceded by an ordinal column giving each row's position in the stream."""
    encoded_ids = [series_id.encode() for series_id in batch.series_ids]
    id_lengths = np.array([len(encoded) for encoded in encoded_ids], dtype=np.int64)
    row_id_lengths = id_lengths[batch.series_index]
    postgres_time = batch.time_unix_micros - _POSTGRES_EPOCH_UNIX_MICROS
    parts = [_HEADER]
    for length in np.unique(row_id_lengths):
        rows = np.flatnonzero(row_id_lengths == length)
        names = np.array(encoded_ids, dtype=f"S{length}")  # only rows of this length read it
        table = np.empty(len(rows), dtype=_row_type(int(length), ordinals is not None))
        table["field_count"] = 4 if ordinals is not None else 3
        if ordinals is not None:
            table["ordinal_size"] = 8
            table["ordinal"] = ordinals[rows]
        table["series_size"] = length
        table["series_id"] = names[batch.series_index[rows]]
        table["time_size"] = 8
        table["time"] = postgres_time[rows]
        table["quantity_size"] = 8
        table["quantity_kwh"] = batch.quantity_kwh[rows]
        parts.append(table.tobytes())
    parts.append(_TRAILER)
    return b"".join(parts)
