"""Work that must run to its end once begun, whatever happens to the task awaiting it."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

Result = TypeVar("Result")


async def complete_despite_cancellation(work: Awaitable[Result]) -> tuple[Result, bool]:
    """Run work to its end even if this task is cancelled meanwhile; also say whether it was.

    A cancellation that arrives meanwhile is absorbed: the work's outcome is what counts.
    """
    task = asyncio.ensure_future(work)
    cancels = 0
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancels += 1
    if cancels:
        current = asyncio.current_task()
        assert current is not None
        for _ in range(cancels):
            current.uncancel()
    return task.result(), cancels > 0
