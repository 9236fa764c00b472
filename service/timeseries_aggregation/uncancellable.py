"""Work that must run to its end once begun, whatever happens to the task awaiting it."""

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

Result = TypeVar("Result")


async def complete_despite_cancellation(work: Awaitable[Result]) -> tuple[Result, bool]:
    """Run work to its end even if this task is cancelled meanwhile; also say whether it was.

    A cancellation that arrives meanwhile is absorbed: the work's outcome is what counts.
    One that was already under way when this began (a failing call cleaning up) stays.
    """
    current = asyncio.current_task()
    assert current is not None
    cancelling_before = current.cancelling()
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
    cancelled = current.cancelling() > cancelling_before
    while current.cancelling() > cancelling_before:
        current.uncancel()
    return task.result(), cancelled
