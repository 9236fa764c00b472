"""Building ingest messages on the client side, in the forms the service accepts."""

from collections.abc import Iterable, Iterator

import numpy as np
import numpy.typing as npt

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

MICROS_PER_SECOND = 1_000_000


def series_messages(
    series_id: str,
    time_unix_micros: npt.ArrayLike,
    quantity_kwh: npt.ArrayLike,
    message_size: int,
) -> Iterator[pb.IngestReadingsRequest]:
    """Readings of one series in columnar messages of message_size readings: the cheapest
    form to encode, send and decode."""
    times = np.asarray(time_unix_micros, dtype=np.int64)
    quantities = np.asarray(quantity_kwh, dtype=np.float64)
    if times.shape != quantities.shape:
        raise ValueError("time_unix_micros and quantity_kwh must have the same length")
    for start in range(0, len(times), message_size):
        end = start + message_size
        columns = pb.SeriesReadings(series_id=series_id)
        columns.time_unix_micros.extend(times[start:end].tolist())
        columns.quantity_kwh.extend(quantities[start:end].tolist())
        yield pb.IngestReadingsRequest(series_readings=[columns])


def row_messages(
    readings: Iterable[tuple[str, int, float]], message_size: int
) -> Iterator[pb.IngestReadingsRequest]:
    """(series_id, unix microseconds, kWh) readings in row-form messages of message_size."""
    batch: list[pb.Reading] = []
    for series_id, micros, quantity in readings:
        seconds, remainder = divmod(micros, MICROS_PER_SECOND)
        reading = pb.Reading(series_id=series_id, quantity_kwh=quantity)
        reading.time.seconds = seconds
        reading.time.nanos = remainder * 1_000
        batch.append(reading)
        if len(batch) == message_size:
            yield pb.IngestReadingsRequest(readings=batch)
            batch = []
    if batch:
        yield pb.IngestReadingsRequest(readings=batch)
