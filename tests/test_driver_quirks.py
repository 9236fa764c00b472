"""The driver's quirks the service works around (storage/driver_quirks.py)."""

import asyncio
import logging

import pytest

from timeseries_aggregation.storage.driver_quirks import cancel_request_losses_quieted

pytestmark = pytest.mark.any_engine


async def test_only_the_orphaned_error_of_a_cancel_request_is_quieted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    caplog.set_level(logging.DEBUG)
    with cancel_request_losses_quieted():
        # What asyncpg leaves behind (asyncio reports it when the future is collected).
        loop.call_exception_handler(
            {
                "message": "Future exception was never retrieved",
                "exception": ConnectionError("unexpected connection_lost() call"),
            }
        )
        loop.call_exception_handler(
            {"message": "Future exception was never retrieved", "exception": ConnectionError("reset by peer")}
        )
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == ["Future exception was never retrieved"]
    assert "reset by peer" in str(caplog.records[-1].exc_info)
    assert any("TLS negotiation" in record.getMessage() for record in caplog.records)
    assert loop.get_exception_handler() is before
