"""Uplink: caller audio from the fork to the Realtime input buffer.

Frames (L16 at the fork rate, any length) → carry byte → streaming resampler (→ 24 kHz) → batches
of ``window_ms`` → ``input_audio_buffer.append``. One resampler for the call, never reset, so the
filter state runs across frame boundaries. The batch buffer is reused: no per-frame allocation
beyond what the resampler returns.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ..audio.pcm import ByteCarry
from ..audio.resample import StreamResampler
from ..realtime.protocol import input_audio_append

__all__ = ["UplinkStats", "run_uplink"]


@dataclass
class UplinkStats:
    frames_in: int = 0
    bytes_in: int = 0
    appends: int = 0
    bytes_out_24k: int = 0


async def run_uplink(
    frames: AsyncIterator[bytes],
    resampler: StreamResampler,
    send: Callable[[dict], Awaitable[None]],
    *,
    window_ms: int,
    stats: UplinkStats,
    on_held: Callable[[float], None] | None = None,
    sample_every_s: float = 1.0,
) -> None:
    """``on_held`` gets, about once per ``sample_every_s``, how long (ms) the oldest frame of the
    batch just sent waited in the bridge: the bridge-added uplink latency (batching + resampler)."""
    carry = ByteCarry()
    batch = bytearray()
    target = 24000 * 2 * window_ms // 1000
    batch_t = 0.0
    next_sample = 0.0
    async for frame in frames:
        stats.frames_in += 1
        stats.bytes_in += len(frame)
        pcm = carry.feed(frame)
        if not pcm:
            continue
        if not batch:
            batch_t = time.monotonic()
        batch += resampler.process(pcm)
        if len(batch) >= target:
            await send(input_audio_append(bytes(batch)))
            stats.appends += 1
            stats.bytes_out_24k += len(batch)
            batch.clear()
            if on_held is not None and (now := time.monotonic()) >= next_sample:
                next_sample = now + sample_every_s
                on_held((now - batch_t) * 1000)
