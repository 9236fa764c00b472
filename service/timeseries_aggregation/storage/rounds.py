"""Background work done in rounds while the server runs: retention of history and of readings."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable


async def every_round(
    work: Callable[[], Awaitable[object]], round_interval_seconds: float, log: logging.Logger, what: str
) -> None:
    """A round of `work` per interval, until cancelled; failures are retried the next round.

    what: the work in a log line, e.g. "history retention: removing expired entries".
    """
    failing = False
    while True:
        try:
            await work()
        # Whatever goes wrong here (the database away, a statement timeout), the server must
        # keep serving: report the first failure of a series and try again next round.
        except Exception as error:
            description = f"{type(error).__name__}: {error}"
            log.debug("%s: round failed (%s)", what, description)
            if not failing:
                log.warning("%s failed (%s); retrying every %g s", what, description, round_interval_seconds)
            failing = True
        else:
            if failing:
                log.info("%s again", what)
            failing = False
        await asyncio.sleep(round_interval_seconds)


@contextlib.asynccontextmanager
async def rounds_running(
    work: Callable[[], Awaitable[object]], round_interval_seconds: float, log: logging.Logger, what: str
) -> AsyncIterator[None]:
    """Run every_round in a task while the block runs."""
    task = asyncio.create_task(every_round(work, round_interval_seconds, log, what))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
