"""Playout: chunks queued in order, the ledger fed by playback events, barge-in truncation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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


@dataclass
class Rig:
    playout: Playout
    player: FakePlayer
    clock: Clock
    truncs: list[Truncation]
    spins: list[int]

    def path(self, chunk_id: str) -> Path:
        return Path(dict(self.player.played)[chunk_id])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Callable[..., Rig]]:
    """Makes a Playout with its run() task, owned here: cancelled and awaited at the end."""
    tasks: list[asyncio.Task[None]] = []

    def make(
        method: str = "sendmsg", settle_timeout_s: float = 0.5, cut_ahead_ms: int | None = None
    ) -> Rig:
        """``cut_ahead_ms`` None by default: most tests here want a file queued ahead at once."""
        player = FakePlayer(method)
        clock = Clock()
        truncs: list[Truncation] = []

        async def on_truncate(t: Truncation) -> None:
            truncs.append(t)

        playout = Playout(
            rate=8000,
            chunk_dir=tmp_path / f"call{len(tasks)}",
            player=player,  # type: ignore[arg-type]
            policy=ChunkPolicy(
                first_ms=200, min_ms=200, max_ms=4000, queue_ahead=1, cut_ahead_ms=cut_ahead_ms
            ),
            resampler=make_resampler(24000, 8000, "samplerate"),
            on_truncate=on_truncate,
            lead_in_s=0.1,
            settle_timeout_s=settle_timeout_s,
            clock=clock,
        )
        spins = [0]
        queue = playout._queue_ready_chunks

        async def counted() -> None:  # a run loop that never waits would spin here
            spins[0] += 1
            if spins[0] > 200:
                raise AssertionError("the playout loop spins without waiting")
            await queue()

        playout._queue_ready_chunks = counted  # type: ignore[method-assign]
        tasks.append(asyncio.create_task(playout.run()))
        return Rig(playout, player, clock, truncs, spins)

    yield make
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        assert isinstance(r, asyncio.CancelledError), r


async def two_chunks_playing_first(r: Rig) -> float:
    """c1 playing, c2 queued behind it; returns c1's length (ms)."""
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1", "c2"]
    r.playout.playback_started("c1")
    c1 = r.playout.ledger.get("c1")
    assert c1 is not None and c1.duration_ms == 280  # 300 ms arrived, 6 ms held by the resampler
    return c1.duration_ms


async def test_chunks_queue_in_order_and_files_are_deleted_after_playing(rig) -> None:
    r = rig()
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1"]
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1", "c2"]  # one queued ahead
    r.playout.audio("resp_1", "item_1", ms24(1000))
    await settle()
    assert len(r.player.played) == 2  # waits: one playing + one queued
    r.playout.playback_started("c1")
    r.clock.t += 0.2
    r.playout.playback_stopped("c1", "done", 1600)
    await settle()
    assert len(r.player.played) == 3
    assert not r.path("c1").exists()
    r.playout.audio_done("item_1")
    await settle()
    assert r.playout.replies["resp_1"].files >= 3


async def test_the_next_file_is_cut_late_and_takes_all_that_arrived(rig) -> None:
    r = rig(cut_ahead_ms=120)
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    r.playout.playback_started("c1")  # 280 ms (6 ms held by the resampler)
    r.playout.audio("resp_1", "item_1", ms24(600))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1"]  # 280 ms ahead: too early to cut
    r.clock.t += 0.15  # 130 ms left of c1
    r.playout.audio("resp_1", "item_1", ms24(100))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1"]
    r.clock.t += 0.02  # 110 ms left: the next file is due, with no delta to wake the loop
    await asyncio.sleep(0.03)  # the loop's own timer (real time, at most the 10 ms it computed)
    assert [c for c, _ in r.player.played] == ["c1", "c2"]
    c2 = r.playout.ledger.get("c2")
    assert c2 is not None and c2.duration_ms == 700  # all that arrived, in whole frames


async def test_cut_ahead_counts_the_broadcast_lead_in(rig) -> None:
    r = rig("broadcast", cut_ahead_ms=120)
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    assert r.playout.ledger.pending_ms(r.clock.t, 100.0) == pytest.approx(380)  # lead-in + 280
    r.playout.playback_started("c1")
    r.clock.t += 0.1
    assert r.playout.ledger.pending_ms(r.clock.t, 100.0) == pytest.approx(180)


async def test_a_late_playback_start_does_not_hold_the_next_file_back(rig) -> None:
    r = rig(cut_ahead_ms=80)
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1"]  # 280 ms, queued at t; no START comes
    r.playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1"]  # 280 ms ahead by the queue time
    r.clock.t += 0.21  # c1 would have 70 ms left, had it started when queued
    r.playout.audio("resp_1", "item_1", ms24(20))
    await settle()
    assert [c for c, _ in r.player.played] == ["c1", "c2"]
    ledger = r.playout.ledger
    # a queued chunk starts when the one before it ends: c2 after c1's 70 ms
    c2 = ledger.get("c2")
    assert c2 is not None
    assert ledger.pending_ms(r.clock.t) == pytest.approx(70 + c2.duration_ms)


async def test_run_ends_when_cancelled_as_it_is_woken(tmp_path: Path) -> None:
    # Python 3.11's wait_for swallows a cancel that comes with the wake: the loop would live on.
    async def on_truncate(t: Truncation) -> None: ...

    playout = Playout(
        rate=8000, chunk_dir=tmp_path / "c", player=FakePlayer(),  # type: ignore[arg-type]
        policy=ChunkPolicy(), resampler=make_resampler(24000, 8000, "samplerate"),
        on_truncate=on_truncate,
    )  # fmt: skip
    task = asyncio.create_task(playout.run())
    playout.audio("resp_1", "item_1", ms24(300))
    await settle()
    playout.playback_started("c1")
    playout.audio("resp_1", "item_1", ms24(100))  # waits for its cut time: a timed wait
    await settle()
    playout.playback_started("c1")  # sets the wake...
    task.cancel()  # ...as the call ends
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done and task.cancelled()


async def test_barge_in_truncates_to_what_was_heard(rig) -> None:
    r = rig()
    r.playout.audio("resp_1", "item_1", ms24(2000))
    await settle()
    r.playout.playback_started("c1")
    r.clock.t += 0.1
    assert r.playout.busy
    assert r.playout.cancel() == ["item_1"]
    r.playout.audio("resp_1", "item_1", ms24(500))  # late delta of the cancelled reply: dropped
    r.playout.playback_stopped("c1", "break", 800)  # 100 ms written at 8 kHz
    await settle()
    assert [(t.item_id, t.audio_end_ms) for t in r.truncs] == [("item_1", 100)]
    assert r.truncs[0].received_ms == pytest.approx(2000)
    assert not r.playout.busy
    n = len(r.player.played)
    await settle()
    assert len(r.player.played) == n


async def test_truncate_waits_for_the_stop_without_spinning(rig) -> None:
    r = rig()
    await two_chunks_playing_first(r)
    r.clock.t += 0.12
    assert r.playout.cancel() == ["item_1"]
    for _ in range(20):  # the loop must sleep until PLAYBACK_STOP, not poll
        await settle()
    assert r.truncs == [] and r.spins[0] < 20
    r.playout.playback_stopped("c1", "break", 960)  # the samples written say 120 ms
    await settle()
    assert [t.audio_end_ms for t in r.truncs] == [120]


async def test_cancel_deletes_unplayed_files_before_the_break(rig) -> None:
    """A file in its lead-in when the break comes (the break is lost there) finds no file."""
    r = rig("broadcast")
    await two_chunks_playing_first(r)
    r.playout.cancel()
    assert not r.path("c2").exists()  # at once, before anything is awaited
    assert r.path("c1").exists()  # playing: FreeSWITCH has it open
    assert r.playout.ledger.get("c2").state == "dropped"


async def test_lost_break_in_lead_in_is_broken_again(rig) -> None:
    r = rig("broadcast")
    await two_chunks_playing_first(r)
    r.clock.t += 0.3
    r.playout.playback_stopped("c1", "done", 2240)  # c2 is now in its lead-in
    assert r.playout.cancel() == ["item_1"]
    r.clock.t += 0.02
    await settle()
    assert r.truncs == []  # a START may still be on its way
    r.playout.playback_started("c2")  # it had been opened already: it plays; break again
    await settle()
    assert r.player.breaks == 1
    r.clock.t += 0.03
    r.playout.playback_stopped("c2", "break", 240)
    await settle()
    c2 = r.playout.ledger.get("c2")
    assert c2 is not None and c2.cancelled
    assert [t.audio_end_ms for t in r.truncs] == [int(c2.item_offset_ms + 30)]


async def test_chunk_that_ended_just_before_the_break_waits_for_the_next_start(rig) -> None:
    r = rig()
    c1_ms = await two_chunks_playing_first(r)
    r.playout.cancel()
    r.clock.t += 0.3
    r.playout.playback_stopped("c1", "done", 2240)  # it ended before our break arrived
    await settle()
    assert r.truncs == []  # c2 may have started already (the break lost between two files)
    r.playout.playback_started("c2")
    r.clock.t += 0.02
    r.playout.playback_stopped("c2", "break", 160)
    await settle()
    assert r.player.breaks == 1
    assert [t.audio_end_ms for t in r.truncs] == [c1_ms + 20]


async def test_quiet_window_passes_when_no_start_comes(rig) -> None:
    r = rig()
    c1_ms = await two_chunks_playing_first(r)
    r.playout.cancel()
    r.clock.t += 0.3
    r.playout.playback_stopped("c1", "done", 2240)
    await settle()
    assert r.truncs == []
    r.clock.t += 0.07  # past the quiet window: c2 was flushed
    await asyncio.sleep(0.08)  # the loop's own timer (real time) wakes it
    await settle()
    assert [t.audio_end_ms for t in r.truncs] == [c1_ms]


async def test_nothing_to_truncate_when_item_fully_played(rig) -> None:
    r = rig()
    r.playout.audio("resp_1", "item_1", ms24(200))
    r.playout.audio_done("item_1")
    await settle()
    r.playout.playback_started("c1")
    r.playout.playback_stopped("c1", "done", 1600)
    assert not r.playout.busy
    assert r.playout.cancel() == []
    await settle()
    assert r.truncs == []


async def test_underrun_is_not_the_end_of_the_item(rig) -> None:
    """Every chunk so far played, but the model is still talking: that is not 'fully played'."""
    r = rig()
    r.playout.audio("resp_1", "item_1", ms24(200))
    await settle()
    r.playout.playback_started("c1")
    r.clock.t += 0.2
    r.playout.playback_stopped("c1", "done", 1440)
    r.playout.audio("resp_1", "item_1", ms24(10))  # too little for a file: buffered
    assert r.playout.cancel() == ["item_1"]
    await settle()
    assert [t.audio_end_ms for t in r.truncs] == [180]  # the 180 ms file, not the 210 received


async def test_cancel_before_the_first_delta_drops_the_reply(rig) -> None:
    r = rig()
    assert r.playout.cancel("resp_1") == []
    r.playout.audio("resp_1", "item_1", ms24(1000))
    await settle()
    assert r.player.played == [] and not r.playout.busy and r.truncs == []
    r.playout.audio("resp_2", "item_2", ms24(300))  # the next reply plays normally
    await settle()
    assert [c for c, _ in r.player.played] == ["c1"]


async def test_without_a_stop_the_deadline_truncates_by_the_clock(rig) -> None:
    r = rig(settle_timeout_s=0.05)
    r.playout.audio("resp_1", "item_1", ms24(2000))
    await settle()
    r.playout.playback_started("c1")
    r.clock.t += 0.25
    r.playout.cancel()
    r.clock.t += 0.05
    await asyncio.sleep(0.07)
    await settle()
    assert [t.audio_end_ms for t in r.truncs] == [300]  # 250 ms + 50 ms by the clock


async def test_barge_in_during_a_greeting_truncates_nothing(rig) -> None:
    r = rig("broadcast")
    r.playout.play_file("/assets/greeting.wav", "greeting", 4000)
    r.playout.playback_started("greeting")
    assert r.playout.busy
    assert r.playout.cancel() == []
    r.playout.playback_stopped("greeting", "break", 800)
    await settle()
    assert r.truncs == [] and not r.playout.busy


async def test_two_items_pending_are_both_truncated(rig) -> None:
    r = rig()
    r.playout.audio("resp_1", "item_1", ms24(300))
    r.playout.audio_done("item_1")
    await settle()
    r.playout.playback_started("c1")
    r.playout.audio("resp_2", "item_2", ms24(300))  # a second reply (after a tool call)
    await settle()
    assert [c for c, _ in r.player.played] == ["c1", "c2"]
    r.clock.t += 0.1
    assert sorted(r.playout.cancel()) == ["item_1", "item_2"]
    r.playout.playback_stopped("c1", "break", 800)
    await settle()
    assert sorted((t.item_id, t.audio_end_ms) for t in r.truncs) == [
        ("item_1", 100),
        ("item_2", 0),
    ]
