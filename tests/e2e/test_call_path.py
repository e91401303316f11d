"""The call path end to end: ``fsbridge serve`` (a subprocess) against both simulators."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import RealtimeSim
from tests.audio_checks import aligned, best_lag, correlation, resample_ref, snr_db
from tests.e2e.conftest import (
    asset,
    base_config,
    start_bridge,
    stop_bridge,
    wait_no_calls,
    wait_ready,
    wait_until,
)
from tests.openai_schema import validate_client_event

pytestmark = pytest.mark.slow


def reply_frames(truth, chunk_dir: Path) -> list:
    return [f for f in truth.heard if str(chunk_dir) in (f.source or "")]


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_greeting_question_answer_hangup(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim, rate: int
) -> None:
    cfg = base_config(tmp_path, fs, rt)
    cfg["freeswitch"]["fork_rate"] = rate
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        caller, caller_rate = asset(
            "caller-en-hello-16k.wav" if rate == 16000 else "caller-en-hello-8k.wav"
        )
        greeting, _ = asset("greeting-en-8k.wav")
        uuid = await fs.originate(
            profile="english",
            caller_audio=caller,
            caller_rate=caller_rate,
            caller_delay_s=len(greeting) / 8000 + 0.5,
            channel_rate=rate,
        )
        ch = fs.channel(uuid)
        await wait_until(lambda: rt.sessions and rt.sessions[0].responses, 30, "a response")
        session = rt.sessions[0]
        await wait_until(
            lambda: (
                session.responses[0].done_t is not None
                and ch.truth.playbacks
                and all(p.stop_t is not None for p in ch.truth.playbacks if p.error is None)
                and len(reply_frames(ch.truth, bridge.chunk_dir)) > 0
            ),
            30,
            "the reply to play out",
        )
        # -- greeting heard, sample by sample
        greet_frames = [f for f in ch.truth.heard if "greeting" in (f.source or "")]
        heard_greeting = np.concatenate([f.samples for f in greet_frames]).astype(np.float64)
        ref_greeting = resample_ref(greeting, 8000, rate)
        s, r = aligned(heard_greeting, ref_greeting, best_lag(heard_greeting, ref_greeting, 400))
        assert correlation(s, r) > 0.95
        # -- caller audio reached the model as valid GA appends, matching the caller audio
        appends = [e for _, e in session.received if e["type"] == "input_audio_buffer.append"]
        assert appends
        for _, event in session.received:
            validate_client_event(event)
        sent_in = np.frombuffer(bytes(session.input_audio), dtype="<i2").astype(np.float64)
        ref_in = resample_ref(caller, caller_rate, 24000)
        lag = best_lag(sent_in, ref_in)
        s, r = aligned(sent_in, ref_in, lag)
        corr = correlation(s, r)
        print(f"\nuplink correlation after resampling: {corr:.4f}")
        assert corr >= 0.9
        # -- the reply heard complete and in order
        reply24, _ = asset("reply-en-short-24k.wav")
        ref_reply = resample_ref(reply24, 24000, rate)
        heard_reply = np.concatenate(
            [f.samples for f in reply_frames(ch.truth, bridge.chunk_dir)]
        ).astype(np.float64)
        lag = best_lag(heard_reply, ref_reply, rate // 10)
        s, r = aligned(heard_reply, ref_reply, lag)
        fraction = len(s) / len(ref_reply)
        snr = snr_db(s, r)
        print(f"reply heard: {fraction:.3f} of samples, SNR {snr:.1f} dB, lag {lag} samples")
        assert fraction >= 0.95
        assert snr >= 20
        # -- first reply sample heard <= 400 ms after the first delta was sent (sim clock)
        first_delta = session.responses[0].first_delta_t
        first_heard = reply_frames(ch.truth, bridge.chunk_dir)[0].t
        latency_ms = (first_heard - first_delta) * 1000
        print(f"first delta -> first sample heard: {latency_ms:.0f} ms")
        assert 0 < latency_ms <= 400
        # -- hangup leaves nothing behind
        await fs.hangup(uuid)
        await wait_until(lambda: session.closed.is_set(), 10, "the Realtime session to close")
        await wait_until(lambda: ch.truth.fork.closed_t is not None, 10, "the fork to close")
        await wait_no_calls(bridge)
        await wait_until(lambda: not (bridge.chunk_dir / uuid).exists(), 10, "chunk dir removal")
        assert list(bridge.chunk_dir.iterdir()) == []
    finally:
        code = await stop_bridge(bridge)
    log = bridge.log()
    assert code == 0, log
    summaries = [json.loads(line) for line in log.splitlines() if '"call summary"' in line]
    assert summaries and summaries[0]["uuid"] == uuid and summaries[0]["turns"] >= 1
    assert "sk-test-key-123" not in log
