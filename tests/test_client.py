"""The client helpers: credentials from arguments or the environment, and message building."""

import numpy as np
import pytest

from timeseries_aggregation.client import API_KEY_VARIABLE, auth_metadata, row_messages, series_messages


def test_api_key_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    assert auth_metadata() == ()
    assert auth_metadata("tsa_given") == (("authorization", "Bearer tsa_given"),)
    monkeypatch.setenv(API_KEY_VARIABLE, "tsa_from_env")
    assert auth_metadata() == (("authorization", "Bearer tsa_from_env"),)
    assert auth_metadata("tsa_given") == (("authorization", "Bearer tsa_given"),)


def test_series_messages_split_columns_into_messages() -> None:
    times = np.arange(5, dtype=np.int64) * 3_600_000_000
    messages = list(series_messages("m", times, [1.0, 2.0, 3.0, 4.0, 5.0], 2))
    assert [len(m.series_readings[0].time_unix_micros) for m in messages] == [2, 2, 1]
    assert list(messages[2].series_readings[0].quantity_kwh) == [5.0]
    assert {m.series_readings[0].series_id for m in messages} == {"m"}
    with pytest.raises(ValueError, match="same length"):
        list(series_messages("m", times, [1.0], 2))


def test_row_messages_carry_microseconds_as_timestamps() -> None:
    [message] = list(row_messages([("m", 1_700_000_000_123_456, 2.5)], 10))
    [reading] = message.readings
    assert (reading.time.seconds, reading.time.nanos) == (1_700_000_000, 123_456_000)
    assert (reading.series_id, reading.quantity_kwh) == ("m", 2.5)
