"""Client-side helpers: channels, credentials, and ingest messages in the forms the service accepts."""

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from timeseries.v1 import timeseries_aggregation_service_pb2 as pb

MICROS_PER_SECOND = 1_000_000
API_KEY_VARIABLE = "TIMESERIES_AGGREGATION_API_KEY"


def open_channel(
    target: str,
    *,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> grpc.Channel:
    """A channel to the service: TLS when a CA is given (with a client certificate for
    mutual TLS), plaintext otherwise."""
    if tls_ca is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_ca.read_bytes(),
        private_key=tls_key.read_bytes() if tls_key else None,
        certificate_chain=tls_cert.read_bytes() if tls_cert else None,
    )
    return grpc.secure_channel(target, credentials)


def auth_metadata(api_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents an API key: the one given, else $TIMESERIES_AGGREGATION_API_KEY,
    else none."""
    key = api_key or os.environ.get(API_KEY_VARIABLE)
    return (("authorization", f"Bearer {key}"),) if key else ()


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
