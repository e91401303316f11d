"""The played-audio ledger: which chunk of which item the caller has heard, and how much.

FreeSWITCH tells us when a chunk starts (PLAYBACK_START) and stops (PLAYBACK_STOP with
``Playback-Status`` done|break and ``playback_last_offset_pos``, the samples written to the channel).
From that the ledger knows, per assistant item, the last millisecond the caller heard: the item
offset of the furthest chunk that started, plus how much of it was written. That is the
``audio_end_ms`` of ``conversation.item.truncate`` — the model must only remember what was heard.

Chunks that FreeSWITCH dropped (``uuid_break all`` flushes the queue) never start; a chunk that was
in its lead-in when the break came plays anyway (the break is lost), and shows up as a late start of
a cancelled chunk. Pure: times are passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["Chunk", "PlayedLedger"]

ChunkState = Literal["queued", "playing", "done", "broken", "dropped"]


@dataclass
class Chunk:
    id: str
    item_id: str | None  # None: not model audio (greeting, apology)
    response_id: str | None
    item_offset_ms: float
    duration_ms: float
    path: str
    queued_t: float
    state: ChunkState = "queued"
    start_t: float | None = None
    stop_t: float | None = None
    played_ms: float = 0.0
    cancelled: bool = False

    @property
    def pending(self) -> bool:
        return self.state in ("queued", "playing")


class PlayedLedger:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._chunks: dict[str, Chunk] = {}

    def add(self, chunk: Chunk) -> None:
        self._chunks[chunk.id] = chunk

    def get(self, chunk_id: str) -> Chunk | None:
        return self._chunks.get(chunk_id)

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._chunks.values())

    def on_start(self, chunk_id: str, t: float) -> Chunk | None:
        chunk = self._chunks.get(chunk_id)
        if chunk is None:
            return None
        chunk.state = "playing"
        chunk.start_t = t
        return chunk

    def on_stop(self, chunk_id: str, t: float, status: str, offset_pos: int | None) -> Chunk | None:
        chunk = self._chunks.get(chunk_id)
        if chunk is None:
            return None
        chunk.stop_t = t
        if status == "break":
            chunk.state = "broken"
            if offset_pos is not None:
                chunk.played_ms = min(chunk.duration_ms, offset_pos * 1000 / self.rate)
            elif chunk.start_t is not None:
                chunk.played_ms = min(chunk.duration_ms, (t - chunk.start_t) * 1000)
        else:
            chunk.state = "done"
            chunk.played_ms = chunk.duration_ms
        return chunk

    def items(self) -> set[str]:
        """The items that still have chunks in the ledger."""
        return {c.item_id for c in self._chunks.values() if c.item_id is not None}

    def pending_count(self) -> int:
        return sum(1 for c in self._chunks.values() if c.pending)

    def pending_ms(self, now: float, lead_in_ms: float = 0.0) -> float:
        """Audio still ahead of a file queued now, on an estimated timeline: a playing chunk ends
        ``duration`` after its PLAYBACK_START; a queued one starts when the one before it ends,
        or ``lead_in_ms`` after it was queued if that is later. A START that reaches us late must
        not hold the next file back, so a queued chunk ages from when it was queued."""
        end = float("-inf")
        for c in self._chunks.values():
            if c.state == "playing" and c.start_t is not None:
                end = max(end, c.start_t + c.duration_ms / 1000)
            elif c.state == "queued":
                end = max(end, c.queued_t + lead_in_ms / 1000) + c.duration_ms / 1000
        return max(0.0, (end - now) * 1000)

    def playing(self) -> Chunk | None:
        for c in self._chunks.values():
            if c.state == "playing":
                return c
        return None

    def drop_queued(self) -> list[Chunk]:
        """Mark every queued chunk dropped (after ``uuid_break all``), and cancel the playing one."""
        dropped = []
        for c in self._chunks.values():
            if c.state == "queued":
                c.state = "dropped"
                c.cancelled = True
                dropped.append(c)
            elif c.state == "playing":
                c.cancelled = True
        return dropped

    def heard_ms(self, item_id: str, now: float | None = None) -> float:
        """The item offset (ms) up to which the caller has heard this item.

        A chunk still playing counts by the clock since its start (``now``), capped at its length;
        once it has stopped, by the samples FreeSWITCH wrote.
        """
        heard = 0.0
        for c in self._chunks.values():
            if c.item_id != item_id or c.start_t is None:
                continue
            if c.state == "playing":
                played = c.duration_ms if now is None else (now - c.start_t) * 1000
                played = max(0.0, min(c.duration_ms, played))
            else:
                played = c.played_ms
            heard = max(heard, c.item_offset_ms + played)
        return heard

    def item_fully_played(self, item_id: str) -> bool:
        chunks = [c for c in self._chunks.values() if c.item_id == item_id]
        return bool(chunks) and all(c.state == "done" for c in chunks)

    def forget(self, chunk_id: str) -> None:
        self._chunks.pop(chunk_id, None)

    def prune(self, keep_item_id: str | None) -> None:
        """Forget the chunks of other items that have nothing pending, so a long call keeps a
        small ledger (an item with a chunk still queued keeps its played ones: they say how far
        the caller got into it)."""
        live = {c.item_id for c in self._chunks.values() if c.pending}
        live.add(keep_item_id)
        for cid in [c.id for c in self._chunks.values() if c.item_id not in live]:
            del self._chunks[cid]
