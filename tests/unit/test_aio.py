"""run_to_end: a cleanup survives the cancellation of the task that runs it."""

from __future__ import annotations

import asyncio

import pytest

from fsbridge.aio import run_to_end


async def _cleanup(steps: list[str]) -> str:
    for name in ("close", "flush", "summary"):
        await asyncio.sleep(0.02)
        steps.append(name)
    return "done"


async def test_returns_the_result_when_nobody_cancels() -> None:
    steps: list[str] = []
    assert await run_to_end(_cleanup(steps), "cleanup") == "done"
    assert steps == ["close", "flush", "summary"]


@pytest.mark.parametrize("cancels", [1, 3])
async def test_cancellation_waits_for_the_end_then_propagates(cancels: int) -> None:
    steps: list[str] = []
    owner = asyncio.create_task(run_to_end(_cleanup(steps), "cleanup"))
    await asyncio.sleep(0.01)
    for _ in range(cancels):  # the drain, then an impatient second signal
        owner.cancel()
        await asyncio.sleep(0.005)
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert steps == ["close", "flush", "summary"]


async def test_a_failing_cleanup_raises_its_error() -> None:
    async def broken() -> None:
        await asyncio.sleep(0)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await run_to_end(broken(), "cleanup")
