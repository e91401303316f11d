"""Playout: chunks queued in order, the ledger fed by playback events, barge-in truncation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fsbridge.audio.resample import make_resampler
from fsbridge.call.chunker import ChunkPolicy
from fsbridge.call.downlink import Playout, Truncation


class FakePlayer:
    def __init__(self, method: str = "sendmsg") -> None:
        self.method = method
        self.played: list[tuple[str, str]] = []
        self.breaks = 0

    async def play(self, path: str, chunk_id: str, *, method: str | None = None) -> None:
        assert Path(path).exists()
        self.played.append((chunk_id, path))

    async def break_all(self) -> None:
        self.breaks += 1


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def ms24(n: int) -> bytes:
    return b"\x10\x00" * (24 * n)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def setup(tmp_path: Path):
    def make(method: str = "sendmsg"):
        player = FakePlayer(method)
        clock = Clock()
        truncs: list[Truncation] = []

        async def on_truncate(t: Truncation) -> None:
            truncs.append(t)

        playout = Playout(
            rate=8000,
            chunk_dir=tmp_path / "call",
            player=player,  # type: ignore[arg-type]
            policy=ChunkPolicy(first_ms=200, min_ms=200, max_ms=4000, queue_ahead=1),
            resampler=make_resampler(24000, 8000, "samplerate"),
            on_truncate=on_truncate,
            lead_in_s=0.1,
            clock=clock,
        )
        return playout, player, clock, truncs

    return make


async def test_chunks_queue_in_order_and_files_are_deleted_after_playing(setup) -> None:
    playout, player, clock, _ = setup()
    task = asyncio.create_task(playout.run())
    try:
        playout.audio("resp_1", "item_1", ms24(300))
        await settle()
        assert [c for c, _ in player.played] == ["c1"]
        playout.audio("resp_1", "item_1", ms24(300))
        await settle()
        assert [c for c, _ in player.played] == ["c1", "c2"]  # one queued ahead
        playout.audio("resp_1", "item_1", ms24(1000))
        await settle()
        assert len(player.played) == 2  # waits: one playing + one queued
        playout.playback_started("c1")
        clock.t += 0.2
        playout.playback_stopped("c1", "done", 1600)
        await settle()
        assert len(player.played) == 3
        assert not Path(player.played[0][1]).exists()
        playout.audio_done("item_1")
        await settle()
        assert playout.replies["resp_1"].files >= 3
    finally:
        task.cancel()


async def test_barge_in_truncates_to_what_was_heard(setup) -> None:
    playout, player, clock, truncs = setup()
    task = asyncio.create_task(playout.run())
    try:
        playout.audio("resp_1", "item_1", ms24(2000))
        await settle()
        playout.playback_started("c1")
        clock.t += 0.1
        assert playout.busy
        assert playout.cancel() == ["item_1"]
        playout.audio("resp_1", "item_1", ms24(500))  # late delta of the cancelled reply: dropped
        playout.playback_stopped("c1", "break", 800)  # 100 ms written at 8 kHz
        await settle()
        assert truncs and truncs[0].item_id == "item_1" and truncs[0].audio_end_ms == 100
        assert truncs[0].received_ms == pytest.approx(2000)
        assert not playout.busy
        n = len(player.played)
        await settle()
        assert len(player.played) == n
    finally:
        task.cancel()


async def test_lost_break_in_lead_in_is_broken_again(setup) -> None:
    playout, player, clock, truncs = setup("broadcast")
    task = asyncio.create_task(playout.run())
    try:
        playout.audio("resp_1", "item_1", ms24(400))
        await settle()
        playout.audio("resp_1", "item_1", ms24(400))
        await settle()
        playout.playback_started("c1")
        clock.t += 0.4
        playout.playback_stopped("c1", "done", 3200)  # c2 is now in its lead-in
        playout.cancel()
        # FreeSWITCH lost the break: c2 starts anyway -> break again at once
        playout.playback_started("c2")
        await settle()
        assert player.breaks == 1
        clock.t += 0.03
        playout.playback_stopped("c2", "break", 240)
        clock.t += 0.2  # past the lead-in window
        await asyncio.sleep(0.01)
        await settle()
        c2 = playout.ledger.get("c2")
        assert c2 is not None and c2.cancelled
        assert truncs and truncs[0].audio_end_ms == int(c2.item_offset_ms + 30)
    finally:
        task.cancel()


async def test_nothing_to_truncate_when_item_fully_played(setup) -> None:
    playout, player, clock, truncs = setup()
    task = asyncio.create_task(playout.run())
    try:
        playout.audio("resp_1", "item_1", ms24(200))
        playout.audio_done("item_1")
        await settle()
        playout.playback_started("c1")
        playout.playback_stopped("c1", "done", 1600)
        assert not playout.busy
        assert playout.cancel() == []
        await settle()
        assert truncs == []
    finally:
        task.cancel()
