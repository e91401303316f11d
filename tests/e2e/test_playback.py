"""Gap-free playback, measured against the FreeSWITCH simulator's heard-frame truth.

For every reply: first delta (Realtime simulator) -> first reply sample written to the caller
(FreeSWITCH simulator), the number of files, and the silence inside the reply beyond the fixed
lead-ins (``uuid_broadcast`` costs 5 frames before every file; ``sendmsg`` none). Both simulators
share one ``SimClock`` at real speed, so these are the figures a caller would live through. The
module also holds the truth-reading helpers the barge-in tests use.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim, HeardFrame, PlaybackRecord
from fsbridge.sim.realtime import RealtimeSim, Reply, ResponseRecord
from tests.e2e.conftest import asset, base_config, start_bridge, stop_bridge, wait_ready, wait_until

pytestmark = pytest.mark.slow

FRAME_S = 0.02
LEAD_IN_MS = 100.0  # the simulator's lead_in_frames=5 at 20 ms (broadcast only)


# -- reading the truth ---------------------------------------------------------------------------
@dataclass
class ReplyTruth:
    """One reply as the simulators saw it: the response, its chunk playbacks, the frames heard."""

    response: ResponseRecord
    playbacks: list[PlaybackRecord]
    frames: list[HeardFrame]
    rate: int

    @property
    def heard_samples(self) -> int:
        return sum(len(f.samples) for f in self.frames)

    @property
    def heard_ms(self) -> float:
        return self.heard_samples / self.rate * 1000

    def audio(self) -> np.ndarray:
        if not self.frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.samples for f in self.frames])


def is_reply_chunk(p: PlaybackRecord, chunk_dir: Path) -> bool:
    return p.path.startswith(str(chunk_dir))  # (params are known only once it plays)


def reply_truths(
    fs: FreeSwitchSim, uuid: str, rt: RealtimeSim, chunk_dir: Path
) -> list[ReplyTruth]:
    """Split the call's reply chunks by response (a chunk belongs to the response whose first
    delta came last before it was queued)."""
    truth = fs.channel(uuid).truth
    if not rt.sessions:
        return []
    responses = [r for r in rt.sessions[0].responses if r.first_delta_t is not None]
    chunks = [p for p in truth.playbacks if is_reply_chunk(p, chunk_dir)]
    out: list[ReplyTruth] = []
    for i, resp in enumerate(responses):
        t0 = resp.first_delta_t
        t1 = responses[i + 1].first_delta_t if i + 1 < len(responses) else math.inf
        assert t0 is not None and t1 is not None
        mine = [p for p in chunks if t0 <= p.queued_t < t1]
        paths = {p.path for p in mine}
        frames = [f for f in truth.heard if f.source in paths]
        out.append(ReplyTruth(resp, mine, frames, truth.rate))
    return out


@dataclass
class PlaybackFigures:
    method: str
    first_audio_ms: float
    files: int
    audio_ms: float
    gap_ms: float  # total silence inside the reply beyond the fixed lead-ins
    max_gap_ms: float  # the longest such silence at one place
    boundaries_after_1s: int  # files that start after the first second of the reply
    file_ms: list[float] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.method:9} first delta->heard {self.first_audio_ms:6.1f} ms | "
            f"{self.files:2d} files for {self.audio_ms / 1000:5.2f} s | "
            f"gap beyond lead-ins {self.gap_ms:6.1f} ms (max {self.max_gap_ms:5.1f}) | "
            f"boundaries after 1 s: {self.boundaries_after_1s} | "
            f"files (ms): {' '.join(f'{ms:.0f}' for ms in self.file_ms)}"
        )


def playback_figures(reply: ReplyTruth, method: str) -> PlaybackFigures:
    frames = reply.frames
    assert frames, "no frame of this reply was heard"
    first_delta = reply.response.first_delta_t
    assert first_delta is not None
    lead_in = LEAD_IN_MS if method == "broadcast" else 0.0
    total_gap = max_gap = 0.0
    boundaries = 0
    heard = 0
    for prev, cur in itertools.pairwise(frames):
        heard += len(prev.samples)
        gap = (cur.t - prev.t - FRAME_S) * 1000
        boundary = cur.source != prev.source
        if boundary and heard / reply.rate >= 1.0:
            boundaries += 1
        excess = gap - (lead_in if boundary else 0.0)
        if excess > 0.5:
            total_gap += excess
            max_gap = max(max_gap, excess)
    started = [p for p in reply.playbacks if p.start_t is not None]
    return PlaybackFigures(
        method=method,
        first_audio_ms=(frames[0].t - first_delta) * 1000,
        files=len(started),
        audio_ms=reply.heard_ms,
        gap_ms=total_gap,
        max_gap_ms=max_gap,
        boundaries_after_1s=boundaries,
        file_ms=[p.offset_pos / reply.rate * 1000 for p in started],
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (with few samples p95 is the maximum, which is what we want)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def bridge_config(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim, method: str, **profile: Any
) -> dict[str, Any]:
    cfg = base_config(tmp_path, fs, rt)
    cfg["freeswitch"]["injection"] = method
    english = cfg["profiles"]["english"]
    english["greeting_mode"] = "none"
    english["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 300}
    english.update(profile)
    return cfg


def utterance(seconds: float = 0.3) -> np.ndarray:
    """The start of the interrupt recording: voiced from its first 10 ms (a prompt VAD onset)."""
    audio, rate = asset("caller-en-interrupt-8k.wav")
    assert rate == 8000
    return audio[: int(seconds * rate)]


@dataclass
class Session:
    """What a scenario needs to drive a call and read it back."""

    fs: FreeSwitchSim
    rt: RealtimeSim
    uuid: str
    chunk_dir: Path
    method: str
    figures: list[Any] = field(default_factory=list)

    def replies(self) -> list[ReplyTruth]:
        return reply_truths(self.fs, self.uuid, self.rt, self.chunk_dir)

    def reply_done(self, i: int) -> bool:
        replies = self.replies()
        if len(replies) <= i:
            return False
        r = replies[i]
        # The response is done on the server before the bridge has queued its last chunk: also
        # ask for 300 ms with nothing new stopping (a file in flight would be heard by then).
        return (
            r.response.status != "in_progress"
            and bool(r.playbacks)
            and all(p.status is not None for p in r.playbacks)
            and self.fs.clock.now() - max(p.stop_t or 0.0 for p in r.playbacks) > 0.3
        )


# -- the scenarios -------------------------------------------------------------------------------
async def run_turns(
    tmp_path: Path, method: str, speed: float, replies: Sequence[str]
) -> list[PlaybackFigures]:
    """One call, one turn per reply: the caller says a word, the reply plays out to its end."""
    clock = SimClock(1.0)
    script = [Reply(audio=asset(name)[0], transcript=name) for name in replies]
    async with (
        FreeSwitchSim(clock=clock, password="ClueCon") as fs,
        RealtimeSim(clock=clock, delivery_speed=speed, replies=script) as rt,
    ):
        bridge = start_bridge(tmp_path, bridge_config(tmp_path, fs, rt, method))
        try:
            await wait_ready(bridge)
            uuid = await fs.originate(
                profile="english", caller_audio=utterance(), caller_delay_s=0.2
            )
            s = Session(fs, rt, uuid, bridge.chunk_dir / uuid, method)
            for i in range(len(replies)):
                if i:
                    await fs.say(uuid, utterance())
                await wait_until(lambda i=i: s.reply_done(i), 40, f"reply {i + 1} to play out")
            return [playback_figures(r, method) for r in s.replies()]
        finally:
            await stop_bridge(bridge)


def report(title: str, figures: list[PlaybackFigures]) -> None:
    print(f"\n{title}")
    for f in figures:
        print("  " + f.line())
    lat = [f.first_audio_ms for f in figures]
    print(
        f"  first delta->heard: p50 {statistics.median(lat):.1f} ms, p95 {percentile(lat, 95):.1f} ms;"
        f" gap beyond lead-ins: max total {max(f.gap_ms for f in figures):.1f} ms,"
        f" longest {max(f.max_gap_ms for f in figures):.1f} ms"
    )


SHORT, LONG = "reply-en-short-24k.wav", "reply-en-long-24k.wav"


@pytest.mark.parametrize("method", ["sendmsg", "broadcast"])
async def test_fast_delivery_has_no_gaps_and_few_files(tmp_path: Path, method: str) -> None:
    figures = await run_turns(tmp_path, method, speed=4.0, replies=[SHORT, SHORT, LONG])
    report(f"playback, {method}, delivery 4x real time", figures)
    assert len(figures) == 3
    lat = [f.first_audio_ms for f in figures]
    assert percentile(lat, 95) <= 180.0  # includes the 100 ms lead-in with broadcast
    for f, name in zip(figures, [SHORT, SHORT, LONG], strict=True):
        assert f.audio_ms >= len(asset(name)[0]) / 24 - 20  # the whole reply was heard
        assert f.max_gap_ms <= LEAD_IN_MS
        assert f.gap_ms <= 20.0  # 4x delivery never starves the queue
        assert f.boundaries_after_1s <= (f.audio_ms - 1000) / 2000  # <= 1 per 2 s, short or long


@pytest.mark.parametrize("method", ["sendmsg", "broadcast"])
async def test_slow_delivery_underruns_stay_short(tmp_path: Path, method: str) -> None:
    figures = await run_turns(tmp_path, method, speed=0.9, replies=[SHORT])
    report(f"playback, {method}, delivery 0.9x real time (underruns)", figures)
    f = figures[0]
    assert f.audio_ms >= len(asset(SHORT)[0]) / 24 - 20
    assert f.max_gap_ms <= LEAD_IN_MS  # no underrun gap longer than one lead-in
