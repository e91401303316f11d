"""Downlink: the model's audio to the caller, and the record of what the caller heard.

``Playout`` owns one direction of one call: audio deltas (24 kHz) → resampler (channel rate) →
chunker → WAV chunk files in the call's directory → the player (broadcast or sendmsg). PLAYBACK_START
/ STOP events come back from FreeSWITCH into the ledger, which releases the next chunk and tells the
barge-in how much of the interrupted item was heard.

Inputs are plain synchronous calls (made by the Realtime dispatcher and the ESL router, both on the
event loop); the ``run`` coroutine does every awaitable thing (writing and queueing files, the
re-break, the truncate), so there is exactly one writer of chunks to FreeSWITCH for this call.

Barge-in: ``Call.barge_in`` calls ``cancel`` (synchronous: drops the unplayed chunks, deletes
their files, marks the reply's later deltas unwanted) and then sends ``uuid_break <uuid> all``.
``run`` sends one ``conversation.item.truncate`` per interrupted item once FreeSWITCH has settled:
the chunk that was playing has reported its PLAYBACK_STOP (with ``playback_last_offset_pos``) and
any PLAYBACK_START already on its way has arrived. docs/conversation.md tells the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..audio.pcm import ByteCarry
from ..audio.resample import StreamResampler
from ..audio.wav import write_wav_atomic
from .chunker import Chunker, ChunkPolicy
from .ledger import Chunk, PlayedLedger
from .player import Player

__all__ = ["Playout", "ReplyStats", "Truncation"]

log = logging.getLogger("fsbridge.call")


@dataclass
class ReplyStats:
    """Per-reply figures for the summary and metrics (bridge clock, seconds)."""

    response_id: str
    item_id: str | None = None
    first_delta_t: float | None = None
    first_heard_t: float | None = None
    files: int = 0
    received_bytes_24k: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def first_audio_latency_ms(self) -> float | None:
        if self.first_delta_t is None or self.first_heard_t is None:
            return None
        return (self.first_heard_t - self.first_delta_t) * 1000


@dataclass(frozen=True)
class Truncation:
    item_id: str
    audio_end_ms: int
    heard_ms: float
    received_ms: float


class Playout:
    def __init__(
        self,
        *,
        rate: int,
        chunk_dir: Path,
        player: Player,
        policy: ChunkPolicy,
        resampler: StreamResampler,
        on_truncate: Callable[[Truncation], Awaitable[None]],
        lead_in_s: float = 0.1,
        settle_timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_reply_heard: Callable[[ReplyStats], None] | None = None,
    ) -> None:
        self.rate = rate
        self.chunk_dir = chunk_dir
        self.player = player
        self.policy = policy
        self.ledger = PlayedLedger(rate)
        self._resampler = resampler
        self._carry = ByteCarry()
        self._on_truncate = on_truncate
        self._on_reply_heard = on_reply_heard
        self._lead_in_s = lead_in_s
        self._settle_timeout_s = settle_timeout_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()  # set at every PLAYBACK_STOP, for waiters
        self._chunker: Chunker | None = None
        self._item_id: str | None = None
        self._response_id: str | None = None
        self._cancelled: set[str] = set()  # response ids whose audio must not be heard
        self._received: dict[str, int] = {}  # item_id -> 24 kHz bytes received
        self._complete: set[str] = set()  # items whose output_audio.done arrived
        self._seq = 0
        self._rebreak = False
        # barge-in: items whose truncate waits until FreeSWITCH has settled (see ``cancel``)
        self._truncate_items: list[str] = []
        self._quiet_until = 0.0
        self._settle_deadline = 0.0
        self.replies: dict[str, ReplyStats] = {}
        self.files_written = 0
        self.bytes_out = 0
        self._last_stop_t: float | None = None

    # -- inputs (synchronous) -------------------------------------------------------------------
    def audio(self, response_id: str, item_id: str, pcm24: bytes) -> None:
        if response_id in self._cancelled:
            return
        stats = self.replies.get(response_id)
        if stats is None:
            stats = self.replies[response_id] = ReplyStats(response_id)
        if stats.first_delta_t is None:
            stats.first_delta_t = self._clock()
            stats.item_id = item_id
        stats.received_bytes_24k += len(pcm24)
        self._received[item_id] = self._received.get(item_id, 0) + len(pcm24)
        if item_id != self._item_id:
            self._finish_item()
            self._item_id, self._response_id = item_id, response_id
            self._chunker = Chunker(self.rate, self.policy)
            self.ledger.prune(item_id)
            live = self.ledger.items() | {item_id}
            self._received = {k: v for k, v in self._received.items() if k in live}
            self._complete &= live
        pcm = self._carry.feed(pcm24)
        if pcm and self._chunker is not None:
            self._chunker.push(self._resampler.process(pcm))
        self._wake.set()

    def audio_done(self, item_id: str) -> None:
        self._complete.add(item_id)
        if item_id == self._item_id:
            self._finish_item()
            self._wake.set()

    def _finish_item(self) -> None:
        # End of an item: the resampler's held-back tail belongs to this item, not the next.
        if self._chunker is not None:
            self._chunker.push(self._resampler.flush())
            self._chunker.finish()
        self._carry.reset()

    def play_file(self, path: str, chunk_id: str, duration_ms: float) -> Chunk:
        """Record a whole file (greeting, apology) that the caller will hear before any reply."""
        chunk = Chunk(chunk_id, None, None, 0.0, duration_ms, path, self._clock())
        self.ledger.add(chunk)
        return chunk

    def playback_started(self, chunk_id: str) -> None:
        chunk = self.ledger.on_start(chunk_id, self._clock())
        if chunk is None:
            return
        stats = self.replies.get(chunk.response_id or "")
        if stats is not None:
            if stats.first_heard_t is None:
                stats.first_heard_t = chunk.start_t
                if self._on_reply_heard is not None:
                    self._on_reply_heard(stats)
            elif self._last_stop_t is not None and chunk.start_t is not None:
                stats.gaps_ms.append((chunk.start_t - self._last_stop_t) * 1000)
        if chunk.cancelled or (chunk.response_id in self._cancelled):
            # FreeSWITCH had opened this file before we deleted it, and our break was lost (it
            # came during the file's lead-in, or between two files): break again, at once.
            chunk.cancelled = True
            self._rebreak = True
        self._wake.set()

    def playback_stopped(self, chunk_id: str, status: str, offset_pos: int | None) -> None:
        chunk = self.ledger.on_stop(chunk_id, self._clock(), status, offset_pos)
        if chunk is None:
            return
        self._last_stop_t = chunk.stop_t
        if chunk.cancelled and self._truncate_items:
            if status == "break":
                # A break took effect while this file played, so the queue behind it was
                # flushed in the same command: no other file of the reply can start now.
                self._quiet_until = 0.0
            else:
                # It ended by itself just before our break landed: the next file may already
                # have been opened, its PLAYBACK_START on the way (a lost break: re-broken).
                self._quiet_until = max(self._quiet_until, self._clock() + self._quiet_s)
        if chunk.item_id is not None:  # reply chunks are ours to delete; prompts are not
            with contextlib.suppress(OSError):
                os.unlink(chunk.path)
        self._wake.set()
        self._stopped.set()

    async def wait_stopped(self, chunk_id: str) -> None:
        """Return once ``chunk_id`` has stopped playing (or was never queued)."""
        while True:
            chunk = self.ledger.get(chunk_id)
            if chunk is None or not chunk.pending:
                return
            self._stopped.clear()
            await self._stopped.wait()

    @property
    def busy(self) -> bool:
        """True while reply audio is queued, playing, or waiting to be cut."""
        return self.ledger.pending_count() > 0 or bool(self._chunker and self._chunker.has_audio)

    def cancel(self, response_id: str | None = None) -> list[str]:
        """Barge-in: drop every unplayed chunk and every later delta of the current reply.

        ``response_id`` names the response the call knows to be active, so that its deltas are
        dropped even if none has arrived yet. Synchronous on purpose: from here on nothing of
        the cancelled reply can be queued, whatever the caller awaits next (the ``uuid_break``).

        The files of the dropped chunks are deleted at once, before the break goes out. That
        closes FreeSWITCH's lost-break window: a chunk in its lead-in (where ``uuid_break`` is
        lost) opens its file only after the lead-in, finds nothing and plays nothing. Should a
        chunk of a cancelled reply start all the same (its file was opened before we deleted
        it), ``playback_started`` breaks again.

        Returns the items whose truncation will follow once FreeSWITCH has settled (the chunk
        that was playing stopped, and any PLAYBACK_START already on its way arrived); items that
        had finished playing are not truncated.
        """
        now = self._clock()
        current = self._response_id
        if current and current not in self._cancelled and self._item_id:
            items = [self._item_id]
        else:
            items = []
        for rid in (current, response_id):
            if rid:
                self._cancelled.add(rid)
        if self._chunker is not None:
            self._chunker.clear()
        self._resampler.flush()  # the cancelled reply's tail must not lead into the next one
        self._carry.reset()
        playing = self.ledger.playing()
        dropped = self.ledger.drop_queued()
        lost_window = False
        for chunk in dropped:
            if chunk.item_id is None:
                continue  # a prompt (greeting): not ours to delete, nothing to truncate
            if chunk.item_id not in items:
                items.append(chunk.item_id)
            try:
                os.unlink(chunk.path)
            except FileNotFoundError:
                pass
            except OSError:
                lost_window = True  # it may play after its lead-in: wait for its start
        if playing is not None and playing.item_id is not None and playing.item_id not in items:
            items.insert(0, playing.item_id)
        items = [i for i in items if not self._fully_played(i) and i not in self._truncate_items]
        for stats in self.replies.values():
            if stats.response_id == response_id or stats.item_id in items:
                stats.interrupted = True
        if not items:
            return []
        self._truncate_items.extend(items)
        quiet = 0.0
        if playing is None and dropped:
            # A file may have been opened just before we deleted it; its START is on the way.
            lead_ins = 2 * self._lead_in_s if self.player.method == "broadcast" else 0.0
            quiet = self._quiet_s + (lead_ins if lost_window else 0.0)
        self._quiet_until = max(self._quiet_until, now + quiet)
        self._settle_deadline = now + self._settle_timeout_s
        self._wake.set()
        return items

    @property
    def _quiet_s(self) -> float:
        """How long a PLAYBACK_START FreeSWITCH has already fired may take to reach us."""
        return 0.06

    def _fully_played(self, item_id: str) -> bool:
        """The item's audio is complete and every chunk of it played to its end."""
        if item_id not in self._complete:
            return False
        if item_id == self._item_id and self._chunker is not None and self._chunker.has_audio:
            return False
        return self.ledger.item_fully_played(item_id)

    # -- the coroutine ----------------------------------------------------------------------------
    async def run(self) -> None:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        while True:
            timeout: float | None = None
            if self._truncate_items:
                if self._settled():
                    timeout = 0.0
                else:
                    now = self._clock()
                    wake_at = (
                        self._quiet_until if now < self._quiet_until else self._settle_deadline
                    )
                    timeout = max(0.001, wake_at - now)
            cut_in = self._next_cut_in()
            if cut_in is not None:
                timeout = cut_in if timeout is None else min(timeout, cut_in)
            if timeout != 0.0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that comes
                # as the wake is set, and this loop would outlive its call.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            if self._rebreak:
                self._rebreak = False
                await self.player.break_all()
            if self._truncate_items and self._settled():
                await self._send_truncates()
            await self._queue_ready_chunks()

    @property
    def _lead_in_ms(self) -> float:
        return self._lead_in_s * 1000 if self.player.method == "broadcast" else 0.0

    def _next_cut_in(self) -> float | None:
        """Seconds until audio waiting in the chunker may be cut (``cut_ahead_ms``), if it waits
        for that: no new delta may come to wake us (the reply is faster than real time)."""
        if self._chunker is None:
            return None
        pending_ms = self.ledger.pending_ms(self._clock(), self._lead_in_ms)
        wait_ms = self._chunker.cut_wait_ms(self.ledger.pending_count(), pending_ms)
        return max(0.001, wait_ms / 1000) if wait_ms is not None else None

    def _settled(self) -> bool:
        now = self._clock()
        if now >= self._settle_deadline:
            return True
        if now < self._quiet_until:
            return False
        items = self._truncate_items
        return not any(c.state == "playing" and c.item_id in items for c in self.ledger)

    async def _send_truncates(self) -> None:
        items, self._truncate_items = self._truncate_items, []
        now = self._clock()
        for item_id in items:
            heard = self.ledger.heard_ms(item_id, now)
            received = self._received.get(item_id, 0) / 48  # 24 kHz int16: 48 bytes per ms
            end_ms = math.floor(max(0.0, min(heard, received)) + 1e-6)
            await self._on_truncate(Truncation(item_id, end_ms, heard, received))

    async def _queue_ready_chunks(self) -> None:
        chunker = self._chunker
        if chunker is None or self._response_id in self._cancelled:
            return
        while True:
            offset_ms = chunker.emitted_ms
            received_ms = self._received.get(self._item_id or "", 0) / 48
            pending_ms = self.ledger.pending_ms(self._clock(), self._lead_in_ms)
            pcm = chunker.take(self.ledger.pending_count(), received_ms, pending_ms)
            if pcm is None:
                return
            self._seq += 1
            chunk_id = f"c{self._seq}"
            path = self.chunk_dir / f"{chunk_id}.wav"
            write_wav_atomic(path, pcm, self.rate)
            chunk = Chunk(
                id=chunk_id,
                item_id=self._item_id,
                response_id=self._response_id,
                item_offset_ms=offset_ms,
                duration_ms=len(pcm) / 2 / self.rate * 1000,
                path=str(path),
                queued_t=self._clock(),
            )
            self.ledger.add(chunk)
            self.files_written += 1
            self.bytes_out += len(pcm)
            stats = self.replies.get(self._response_id or "")
            if stats:
                stats.files += 1
            await self.player.play(str(path), chunk_id)
            if self._response_id in self._cancelled:
                return
