"""The simulators' clock: monotonic time scaled by a speed factor.

Both simulators of one test take the same ``SimClock`` so that their recorded truth (when a frame was
sent, when a sample was heard, when a command arrived) shares one time axis. ``speed`` > 1 runs the
simulated world faster than real time: every simulated duration is divided by it before sleeping.
"""

from __future__ import annotations

import asyncio
import time


class SimClock:
    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be > 0")
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._t0) * self.speed

    def real_deadline(self, sim_t: float) -> float:
        """The ``time.monotonic()`` value at which simulated time reaches ``sim_t``."""
        return self._t0 + sim_t / self.speed

    async def sleep_until(self, sim_t: float) -> None:
        """Sleep until simulated time ``sim_t`` (drift-free: absolute deadlines, not deltas)."""
        delay = self.real_deadline(sim_t) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)
