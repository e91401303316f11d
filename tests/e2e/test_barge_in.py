"""Barge-in end to end, measured against both simulators' recorded truth (one SimClock).

A long reply is interrupted at different points — inside the first file, exactly at a file
boundary (with ``uuid_broadcast`` the next file is then in its lead-in, where a break is lost),
just before a boundary, later on — with both injection methods. For each barge-in:

* reaction: ``input_audio_buffer.speech_started`` sent by the Realtime simulator -> ``uuid_break``
  received by the FreeSWITCH simulator;
* truncation error: ``audio_end_ms`` of the truncate the Realtime simulator received minus what the
  caller truly heard of that item (the reply samples FreeSWITCH wrote, placed in the item by
  cross-correlation with the reply audio);
* that nothing of the old reply reached the caller after the break, beyond a frame already taken.

After the last barge-in a short reply plays to its end and the caller speaks again: no break and
no truncate may follow. With ``interrupt_response: false`` the bridge must cancel the response.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fsbridge.audio.wav import read_wav
from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import RealtimeSim, Reply
from tests.audio_checks import aligned, best_lag, correlation, resample_ref
from tests.e2e.conftest import asset, start_bridge, stop_bridge, wait_ready, wait_until
from tests.e2e.test_playback import (
    LONG,
    SHORT,
    ReplyTruth,
    Session,
    bridge_config,
    percentile,
    utterance,
)

pytestmark = pytest.mark.slow

LATE_S = 0.025  # a frame already taken when the break lands is still written (<= 1 tick)


@dataclass
class BargeFigures:
    point: str
    reaction_ms: float
    audio_end_ms: int | None
    heard_ms: float  # truly heard, by content
    samples_ms: float  # truly heard, by count of reply samples written
    late_ms: float  # reply audio written after the break (beyond the frame in flight)
    corr: float
    lost: int  # files popped in their lead-in when the break came (played nothing: file deleted)
    rebreaks: int  # further breaks for this reply (a chunk of it started after the break)

    @property
    def error_ms(self) -> float:
        return (self.audio_end_ms if self.audio_end_ms is not None else -1e9) - self.heard_ms

    def line(self) -> str:
        return (
            f"{self.point:>14}: reaction {self.reaction_ms:5.1f} ms | audio_end_ms {self.audio_end_ms} "
            f"| heard {self.heard_ms:7.1f} ms (samples {self.samples_ms:7.1f}) | "
            f"error {self.error_ms:+6.1f} ms | after break {self.late_ms:4.0f} ms | "
            f"lost-break files {self.lost} | re-breaks {self.rebreaks} | corr {self.corr:.3f}"
        )


def speech_starts(rt: RealtimeSim) -> list[float]:
    return [t for t, ev in rt.sessions[0].sent if ev["type"] == "input_audio_buffer.speech_started"]


def breaks(fs: FreeSwitchSim, uuid: str) -> list[float]:
    return [
        c.t
        for c in fs.channel(uuid).truth.commands
        if c.kind == "api" and c.text.split()[:2] == ["api", "uuid_break"]
    ]


def heard_by_content(reply: ReplyTruth, ref8k: np.ndarray) -> tuple[float, float]:
    """Where in the item the caller's last heard reply sample lies (ms), and the match quality."""
    heard = reply.audio().astype(np.float64)
    if len(heard) == 0:
        return 0.0, 1.0
    lag = best_lag(heard, ref8k[: len(heard) + 800], 400)
    s, r = aligned(heard, ref8k, lag)
    return (len(heard) - lag) / reply.rate * 1000, correlation(s, r)


def figures_for(
    s: Session, index: int, point: str, t_speech: float, ref8k: np.ndarray
) -> BargeFigures:
    reply = s.replies()[index]
    t_break = min(t for t in breaks(s.fs, s.uuid) if t >= t_speech)
    later = [r.response.first_delta_t for r in s.replies()[index + 1 :]]
    t_next = min((t for t in later if t is not None), default=float("inf"))
    item = reply.response.item_ids[0]
    ends = [end for _, item_id, end in s.rt.sessions[0].truncations if item_id == item]
    heard_ms, corr = heard_by_content(reply, ref8k)
    late = sum(len(f.samples) for f in reply.frames if f.t > t_break + LATE_S)
    return BargeFigures(
        point=point,
        reaction_ms=(t_break - t_speech) * 1000,
        audio_end_ms=ends[0] if ends else None,
        heard_ms=heard_ms,
        samples_ms=reply.heard_ms,
        late_ms=late / reply.rate * 1000,
        corr=corr,
        lost=sum(1 for p in reply.playbacks if p.status == "not_found"),
        rebreaks=sum(1 for t in breaks(s.fs, s.uuid) if t_break < t < t_next),
    )


async def interrupt(s: Session, clock: SimClock, point: tuple[str, float]) -> None:
    """Speak over the newest reply at ``point``: (``at``, seconds after its first heard sample),
    (``stop``, file k stopped: the next one is starting / in its lead-in) or (``before``, 40 ms
    before file k ends)."""
    kind, value = point
    reply = s.replies()[-1]
    if kind == "at":
        await clock.sleep_until(reply.frames[0].t + value)
    else:
        k = int(value)

        def nth() -> object:
            chunks = s.replies()[-1].playbacks
            if len(chunks) < k:
                return None
            p = chunks[k - 1]
            return p if (p.stop_t if kind == "stop" else p.first_write_t) is not None else None

        p = await s.fs.wait_for(nth, timeout=10, interval=0.002)
        if kind == "before":
            samples, rate = read_wav(p.path)  # still there: deleted once it stops
            await clock.sleep_until(p.first_write_t + len(samples) / rate - 0.04)
    await s.fs.say(s.uuid, utterance())


POINTS = [("at", 0.1), ("stop", 2), ("before", 3), ("at", 1.5), ("stop", 4)]


async def run_barge_ins(tmp_path: Path, method: str) -> list[BargeFigures]:
    clock = SimClock(1.0)
    long, _ = asset(LONG)
    ref8k = resample_ref(long, 24000, 8000)
    script = [Reply(audio=long, transcript="a long reply")] * len(POINTS)
    script.append(Reply(audio=asset(SHORT)[0], transcript="a short reply"))
    async with (
        FreeSwitchSim(clock=clock, password="ClueCon") as fs,
        RealtimeSim(clock=clock, replies=script) as rt,
    ):
        bridge = start_bridge(tmp_path, bridge_config(tmp_path, fs, rt, method))
        try:
            await wait_ready(bridge)
            uuid = await fs.originate(
                profile="english", caller_audio=utterance(), caller_delay_s=0.2
            )
            s = Session(fs, rt, uuid, bridge.chunk_dir / uuid, method)
            out: list[BargeFigures] = []
            for i, point in enumerate(POINTS):
                await wait_until(
                    lambda i=i: len(s.replies()) > i and s.replies()[i].frames, 20, f"reply {i + 1}"
                )
                n_speech = len(speech_starts(rt))
                await interrupt(s, clock, point)
                await wait_until(
                    lambda n=n_speech: len(speech_starts(rt)) > n, 10, "speech_started"
                )
                t_speech = speech_starts(rt)[n_speech]
                item = s.replies()[i].response.item_ids
                await wait_until(
                    lambda i=i: (
                        any(
                            t[1] in s.replies()[i].response.item_ids
                            for t in rt.sessions[0].truncations
                        )
                        and all(p.status is not None for p in s.replies()[i].playbacks)
                    ),
                    10,
                    f"the truncate of reply {i + 1} ({item})",
                )
                out.append(figures_for(s, i, f"{point[0]} {point[1]:g}", t_speech, ref8k))
            # the short reply plays to its end; speaking afterwards interrupts nothing
            last = len(POINTS)
            await wait_until(lambda: s.reply_done(last), 20, "the short reply to play out")
            n_breaks, n_speech = len(breaks(fs, uuid)), len(speech_starts(rt))
            n_trunc = len(rt.sessions[0].truncations)
            await fs.say(uuid, utterance())
            await wait_until(lambda: len(speech_starts(rt)) > n_speech, 10, "speech_started")
            await wait_until(lambda: len(s.replies()) > last + 1, 10, "the next response")
            assert len(breaks(fs, uuid)) == n_breaks, "a break after the reply had finished"
            assert len(rt.sessions[0].truncations) == n_trunc, "truncated a reply heard in full"
            assert "response.cancel" not in rt.sessions[0].received_types()  # the server cancels
            return out
        finally:
            await stop_bridge(bridge)


@pytest.mark.parametrize("method", ["sendmsg", "broadcast"])
async def test_barge_in_reaction_and_truncation(tmp_path: Path, method: str) -> None:
    figures = await run_barge_ins(tmp_path, method)
    print(f"\nbarge-in, {method} ({len(figures)} barge-ins into {LONG})")
    for f in figures:
        print("  " + f.line())
    reactions = [f.reaction_ms for f in figures]
    errors = [abs(f.error_ms) for f in figures]
    print(
        f"  reaction p50 {statistics.median(reactions):.1f} ms, p95 {percentile(reactions, 95):.1f} ms;"
        f" truncation error max {max(errors):.1f} ms; after-break audio max "
        f"{max(f.late_ms for f in figures):.0f} ms"
    )
    assert percentile(reactions, 95) <= 20.0
    for f in figures:
        assert f.audio_end_ms is not None
        assert abs(f.error_ms) <= 40.0, f.line()
        assert f.late_ms == 0.0, f.line()  # nothing of the old reply after the break
        assert f.corr > 0.9, f.line()  # what was heard is the start of the reply, in order


async def test_bridge_cancels_when_the_server_does_not(tmp_path: Path) -> None:
    clock = SimClock(1.0)
    long, _ = asset(LONG)
    async with (
        FreeSwitchSim(clock=clock, password="ClueCon") as fs,
        RealtimeSim(clock=clock, replies=[Reply(audio=long, transcript="a long reply")]) as rt,
    ):
        cfg = bridge_config(tmp_path, fs, rt, "sendmsg")
        cfg["profiles"]["english"]["turn_detection"]["interrupt_response"] = False
        bridge = start_bridge(tmp_path, cfg)
        try:
            await wait_ready(bridge)
            uuid = await fs.originate(
                profile="english", caller_audio=utterance(), caller_delay_s=0.2
            )
            s = Session(fs, rt, uuid, bridge.chunk_dir / uuid, "sendmsg")
            await wait_until(lambda: s.replies() and s.replies()[0].frames, 20, "the reply")
            await clock.sleep_until(s.replies()[0].frames[0].t + 0.5)
            await fs.say(uuid, utterance())
            session = rt.sessions[0]
            await wait_until(
                lambda: "response.cancel" in session.received_types(), 10, "response.cancel"
            )
            resp = s.replies()[0].response
            await wait_until(lambda: resp.status != "in_progress", 10, "the response to end")
            assert (resp.status, resp.reason) == ("cancelled", "client_cancelled")
            t_cancel = next(t for t, ev in session.received if ev["type"] == "response.cancel")
            t_speech = speech_starts(rt)[-1]
            assert t_speech <= min(breaks(fs, uuid)) <= t_cancel  # the break goes out first
            await wait_until(lambda: session.truncations, 10, "the truncate")
            print(
                f"\ninterrupt_response false: break {1000 * (min(breaks(fs, uuid)) - t_speech):.1f} ms,"
                f" response.cancel {1000 * (t_cancel - t_speech):.1f} ms after speech_started"
            )
        finally:
            await stop_bridge(bridge)
