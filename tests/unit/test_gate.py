"""The local speech gate: level, timing, echo rejection, odd frame sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.audio.wav import read_wav
from fsbridge.call.gate import EchoReference, SpeechGate
from tests.e2e.conftest import ASSETS

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


def speech(seconds: float = 2.0) -> np.ndarray:
    samples, rate = read_wav(ASSETS / "caller-en-hello-8k.wav")
    assert rate == RATE
    return samples[: int(seconds * RATE)]


def tone(seconds: float, db: float, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    amp = 32767 * 10 ** (db / 20) * np.sqrt(2)  # a sine's RMS is amp / sqrt(2)
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def make_gate(echo: EchoReference | None = None, **kw: object) -> SpeechGate:
    args: dict[str, object] = dict(
        threshold_db=-35.0, min_speech_ms=120, end_silence_ms=400, echo_correlation=0.6
    )
    args.update(kw)
    return SpeechGate(RATE, echo=echo, **args)  # type: ignore[arg-type]


def run(gate: SpeechGate, audio: np.ndarray, t0: float = 0.0, frame: int = FRAME) -> list:
    events = []
    for i in range(0, len(audio) - frame + 1, frame):
        t = t0 + (i + frame) / RATE  # arrival: the end of the frame
        events += gate.feed(audio[i : i + frame].tobytes(), t)
    return events


def test_speech_start_after_min_speech_and_end_after_silence() -> None:
    gate = make_gate()
    audio = np.concatenate(
        [np.zeros(RATE // 2, np.int16), tone(0.5, -20), np.zeros(RATE, np.int16)]
    )
    events = run(gate, audio)
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
    start, end = events
    assert start.t == pytest.approx(0.5 + 0.12, abs=0.001)  # 6 voiced frames of 20 ms
    assert end.t == pytest.approx(1.0 + 0.4, abs=0.001)  # 20 silent frames
    assert not gate.in_speech


def test_quiet_audio_and_short_clicks_are_not_speech() -> None:
    gate = make_gate()
    quiet = tone(1.0, -45)  # below the -35 dBFS threshold
    click = np.concatenate([tone(0.1, -10), np.zeros(RATE // 2, np.int16)])  # 100 ms < 120 ms
    assert run(gate, np.concatenate([quiet, click])) == []
    assert gate.voiced_frames == 5


def test_threshold_is_the_frame_level_in_dbfs() -> None:
    above, below = make_gate(threshold_db=-30.0), make_gate(threshold_db=-30.0)
    assert [e.kind for e in run(above, tone(0.3, -29))] == ["speech_start"]
    assert run(below, tone(0.3, -31)) == []


def test_real_speech_is_detected() -> None:
    gate = make_gate()
    events = run(gate, np.concatenate([speech(2.0), np.zeros(RATE, np.int16)]))
    assert events and events[0].kind == "speech_start" and events[-1].kind == "speech_end"


def test_echo_of_what_we_play_is_not_speech() -> None:
    played = speech(2.0)
    echo = EchoReference(RATE)
    echo.play(played, t=10.0)
    gate = make_gate(echo)
    delay = int(0.12 * RATE)  # 120 ms echo path, attenuated and noisy
    rng = np.random.default_rng(1)
    back = np.zeros(len(played) + delay)
    back[delay:] = 0.5 * played
    back += rng.normal(0, 30, len(back))
    events = run(gate, back.astype(np.int16), t0=10.0)
    assert events == [], f"echo taken for speech (last corr {gate.last_correlation:.2f})"
    assert gate.echo_frames > 20
    assert gate.last_correlation > 0.6


def test_caller_talking_over_playback_is_speech() -> None:
    samples, _ = read_wav(ASSETS / "caller-en-interrupt-8k.wav")
    echo = EchoReference(RATE)
    echo.play(speech(2.0), t=0.0)  # we play one voice ...
    gate = make_gate(echo)
    events = run(gate, samples[: 2 * RATE], t0=0.0)  # ... the caller says something else
    assert events and events[0].kind == "speech_start"
    assert gate.last_correlation < 0.6


def test_echo_check_ends_where_playback_was_broken() -> None:
    played = speech(2.0)
    echo = EchoReference(RATE)
    echo.play(played, t=0.0)
    echo.stop(0.5)  # uuid_break: the caller heard only 0.5 s
    assert echo.active(0.4, 0.6) and not echo.active(0.9, 1.2)
    gate = make_gate(echo)
    late = np.concatenate([np.zeros(RATE, np.int16), played[RATE : RATE + RATE // 2]])
    events = run(gate, late, t0=0.0)  # the same words after the break are the caller's now
    assert events and events[0].kind == "speech_start"


def test_reference_window_and_correlation_off() -> None:
    echo = EchoReference(RATE)
    echo.play(np.arange(1, 801, dtype=np.int16), t=1.0)
    out = np.zeros(200, dtype=np.float32)
    echo.window(0.99, out)  # 80 samples before the clip, then its first 120
    assert np.all(out[:80] == 0) and out[80] == 1 and out[-1] == 120
    never = make_gate(echo, echo_correlation=1.0)  # 1.0 turns the echo check off
    played = speech(1.0)
    echo.play(played, t=5.0)
    assert run(never, played, t0=5.0)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 700), min_size=1, max_size=40))
def test_odd_frame_sizes_give_the_same_decisions(sizes: list[int]) -> None:
    audio = np.concatenate([np.zeros(800, np.int16), tone(0.4, -20), np.zeros(RATE, np.int16)])
    whole = make_gate()
    expected = [e.kind for e in run(whole, audio)]
    split = make_gate()
    got, pos, i = [], 0, 0
    data = audio.tobytes()
    while pos < len(data):
        n = sizes[i % len(sizes)] * 2 - (1 if i % 3 == 2 else 0)  # sometimes an odd byte count
        got += [ev.kind for ev in split.feed(data[pos : pos + n], 0.0)]
        pos += n
        i += 1
    assert got == expected
