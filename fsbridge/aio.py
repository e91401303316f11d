"""Small asyncio helpers shared by the service and its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_to_end"]

T = TypeVar("T")


async def run_to_end(coro: Coroutine[Any, Any, T], name: str) -> T:
    """Await ``coro`` to its end even if the caller is cancelled meanwhile, then re-raise that.

    For cleanups: one interrupted half-way leaves sockets open, counters wrong and records
    unwritten. The coroutine must be bounded (every wait in it has a timeout), because a
    cancellation, repeated or not, only takes effect once it has finished.
    """
    task = asyncio.create_task(coro, name=name)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()
