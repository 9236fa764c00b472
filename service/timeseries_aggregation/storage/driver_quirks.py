"""Quirks of the database driver that the service works around, each with the reason.

asyncpg opens a second connection to send a cancel request when a query's task is cancelled
(a client that hangs up mid-stream), negotiating TLS first where the URL allows it. When that
connection closes during the negotiation, asyncpg sets an error on a future nobody awaits, and
asyncio logs it as an error ("Future exception was never retrieved": asyncpg issues 1211 and
1310). Nothing failed that the service cares about: the query was cancelled anyway.
"""

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# asyncpg's own words for a connection lost during the TLS negotiation.
_LOST_DURING_NEGOTIATION = "unexpected connection_lost() call"


@contextmanager
def cancel_request_losses_quieted() -> Iterator[None]:
    """Log the orphaned error of a cancel request's lost connection at debug level, on the
    running loop, while the block runs; everything else goes to the handler in place."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if type(error) is ConnectionError and str(error) == _LOST_DURING_NEGOTIATION:
            logger.debug("a cancel request's connection closed during its TLS negotiation")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
