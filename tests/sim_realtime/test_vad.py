"""Energy VAD: decisions on the appended-audio timeline, honouring threshold/padding/silence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.sim.rt_vad import EnergyVad, VadEvent, level_dbfs
from tests.sim_realtime.conftest import silence, tone

AUDIO = silence(1000) + tone(800) + silence(1000)


def _vad(**kw) -> EnergyVad:
    return EnergyVad(
        **{"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200, **kw}
    )


def test_start_and_stop_positions() -> None:
    events = _vad().feed(AUDIO)
    # onset 1000 ms, confirmed after 30 ms; start reported with 300 ms of prefix padding
    assert events == [VadEvent("start", 700, 1030), VadEvent("stop", 2000, 2000)]


@pytest.mark.parametrize(("prefix", "silence_ms"), [(0, 500), (100, 300), (600, 1000)])
def test_padding_and_silence_are_honoured(prefix: int, silence_ms: int) -> None:
    start, stop = _vad(prefix_padding_ms=prefix, silence_duration_ms=silence_ms).feed(
        AUDIO + silence(1000)
    )
    assert start.audio_ms == 1000 - prefix
    assert stop.audio_ms == 1800 + silence_ms


def test_prefix_never_reaches_before_the_floor() -> None:
    vad = _vad(start_ms=0)
    vad.set_floor(950)
    (start, _stop) = vad.feed(AUDIO)
    assert start.audio_ms == 950


def test_threshold_decides_what_is_speech() -> None:
    quiet = silence(200) + tone(500, dbfs=-42) + silence(500)
    assert level_dbfs(0.5) == -45 and level_dbfs(0.6) == -40
    assert [e.kind for e in _vad(threshold=0.5).feed(quiet)] == ["start", "stop"]
    assert _vad(threshold=0.6).feed(quiet) == []
    assert _vad(threshold=0.9).feed(silence(200) + tone(500, dbfs=-30)) == []  # needs -25 dBFS


def test_short_pause_does_not_end_the_turn() -> None:
    pcm = silence(500) + tone(400) + silence(150) + tone(400) + silence(600)
    events = _vad(silence_duration_ms=200).feed(pcm)
    assert [(e.kind, e.audio_ms) for e in events] == [("start", 200), ("stop", 1650)]


def test_a_click_is_not_speech() -> None:
    assert _vad().feed(silence(200) + tone(20) + silence(500)) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60))
def test_chunking_does_not_change_decisions(cuts: list[int]) -> None:
    """Any split of the same bytes (odd sizes included) gives the same events."""
    expected = _vad().feed(AUDIO)
    vad, got, pos = _vad(), [], 0
    for n in cuts:
        got += vad.feed(AUDIO[pos : pos + n])
        pos += n
    got += vad.feed(AUDIO[pos:])
    assert got == expected


async def test_server_vad_turn_timing_and_sequence(make_sim, connect) -> None:
    sim = await make_sim()
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "server_vad",
                            "prefix_padding_ms": 200,
                            "silence_duration_ms": 400,
                        }
                    }
                },
            },
        }
    )
    await c.recv_until("session.updated")
    await c.append(silence(1000) + tone(900) + silence(1200), chunk_ms=20)
    await c.recv_until("response.done")
    types = [t for t in c.types() if not t.startswith("session.")]
    assert types[:6] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    ev = {e["type"]: e for e in c.events}
    started, stopped = (
        ev["input_audio_buffer.speech_started"],
        ev["input_audio_buffer.speech_stopped"],
    )
    print("audio_start_ms", started["audio_start_ms"], "audio_end_ms", stopped["audio_end_ms"])
    assert started["audio_start_ms"] == 800  # onset 1000 - 200 prefix, exact on the audio timeline
    assert stopped["audio_end_ms"] == 2300  # speech end 1900 + 400 silence
    assert started["item_id"] == stopped["item_id"] == ev["input_audio_buffer.committed"]["item_id"]
    s = sim.sessions[0]
    assert s.items[0]["audio_ms"] == pytest.approx(2300 - 800)
    assert s.responses[0].trigger == "vad"


async def test_semantic_vad_waits_by_eagerness(make_sim, connect) -> None:
    sim = await make_sim(semantic_silence_ms={"low": 1200, "medium": 700, "auto": 700, "high": 350})
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "semantic_vad",
                            "eagerness": "high",
                            "create_response": False,
                        }
                    }
                },
            },
        }
    )
    await c.recv_until("session.updated")
    await c.append(silence(500) + tone(500) + silence(1500))
    stopped = await c.recv_until("input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] == 1000 + 350
    await c.recv_until("conversation.item.done")
    assert sim.sessions[0].responses == []  # create_response false


async def test_no_events_when_turn_detection_is_null(sim, connect) -> None:
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await c.recv_until("session.updated")
    await c.append(silence(300) + tone(600) + silence(800))
    await c.send({"type": "input_audio_buffer.commit"})
    await c.recv_until("conversation.item.done")
    assert "input_audio_buffer.speech_started" not in c.types()
    assert sim.sessions[0].responses == []


def test_g711_codecs_round_trip() -> None:
    import numpy as np

    from fsbridge.sim.rt_audio import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

    x = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 20000).astype(np.int16)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(x)).astype(float)
        snr = 10 * np.log10(np.mean(x.astype(float) ** 2) / np.mean((y - x) ** 2))
        assert snr > 30
