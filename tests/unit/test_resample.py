"""Streaming resamplers: level, anti-aliasing, streamed == one-shot, no drift, clean segments.

Every check goes through the public ``process``/``flush`` with int16 bytes in 20 ms frames, the
way the call's uplink and downlink use them; levels are measured here independently of the bench.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.audio.resample import (
    ENGINES,
    PassThrough,
    StreamResampler,
    make_resampler,
)
from fsbridge.audio.wav import parse_wav

UPLINK = [(8000, 24000), (16000, 24000)]
DOWNLINK = [(24000, 8000), (24000, 16000)]
DIRECTIONS = UPLINK + DOWNLINK
FRAME_MS = 20


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")


def frames(pcm: bytes, rate: int, ms: int = FRAME_MS) -> list[bytes]:
    step = rate * ms // 1000 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def stream(rs: StreamResampler, x: np.ndarray, ms: int = FRAME_MS) -> np.ndarray:
    pcm = x.astype("<i2").tobytes()
    out = b"".join(rs.process(f) for f in frames(pcm, rs.in_rate, ms)) + rs.flush()
    return np.frombuffer(out, dtype="<i2")


def one_shot(rs: StreamResampler, x: np.ndarray) -> np.ndarray:
    out = rs.process(x.astype("<i2").tobytes()) + rs.flush()
    return np.frombuffer(out, dtype="<i2")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def steady(x: np.ndarray, rate: int) -> np.ndarray:
    """Without the first and last 100 ms (filter start-up and tail)."""
    return x[rate // 10 : len(x) - rate // 10]


def speech(rate: int) -> np.ndarray:
    name = {8000: "caller-en-hello-8k.wav", 16000: "caller-en-hello-16k.wav"}.get(
        rate, "reply-en-short-24k.wav"
    )
    samples, file_rate = parse_wav((resources.files("fsbridge") / "assets" / name).read_bytes())
    assert file_rate == rate
    return samples


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b"), DIRECTIONS)
@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_tone_keeps_its_level(engine: str, a: int, b: int, freq: float) -> None:
    x = tone(freq, a)
    y = stream(make_resampler(a, b, engine), x)
    gain_db = 20 * np.log10(rms(steady(y, b)) / rms(steady(x, a)))
    print(f"{engine} {a}->{b} {freq:.0f} Hz: {gain_db:+.3f} dB")
    assert abs(gain_db) <= 0.5


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b", "freq"), [(24000, 8000, 5000.0), (24000, 16000, 9000.0)])
def test_tone_above_target_nyquist_is_removed(engine: str, a: int, b: int, freq: float) -> None:
    x = tone(freq, a)
    y = stream(make_resampler(a, b, engine), x)
    atten_db = 20 * np.log10(rms(steady(x, a)) / max(rms(steady(y, b)), 1e-9))
    print(f"{engine} {a}->{b} {freq:.0f} Hz: -{atten_db:.1f} dB")
    assert atten_db >= 60


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b"), UPLINK)
def test_upsampling_images_are_removed(engine: str, a: int, b: int) -> None:
    y = steady(stream(make_resampler(a, b, engine), tone(1000.0, a)), b).astype(np.float64)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / b)
    images_db = 10 * np.log10(spec.sum() / spec[freqs > a / 2].sum())
    print(f"{engine} {a}->{b}: images -{images_db:.1f} dB")
    assert images_db >= 60


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b"), DIRECTIONS)
def test_streamed_in_20ms_frames_equals_one_shot(engine: str, a: int, b: int) -> None:
    x = np.concatenate([speech(a), tone(3000.0, a, 0.5)])
    streamed = stream(make_resampler(a, b, engine), x)
    whole = one_shot(make_resampler(a, b, engine), x)
    assert len(streamed) == len(whole) == round(len(x) * b / a)
    diff = np.abs(streamed.astype(np.int32) - whole.astype(np.int32))
    assert diff.max() <= 1


@settings(max_examples=20, deadline=None)
@given(
    engine=st.sampled_from(ENGINES),
    direction=st.sampled_from(DIRECTIONS),
    cuts=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=20),
)
def test_any_whole_sample_chunking_equals_one_shot(
    engine: str, direction: tuple[int, int], cuts: list[int]
) -> None:
    a, b = direction
    x = tone(1000.0, a, 0.3)
    pcm = x.tobytes()
    rs = make_resampler(a, b, engine)
    pieces, pos = [], 0
    for c in cuts:
        pieces.append(rs.process(pcm[pos : pos + 2 * c]))
        pos = min(len(pcm), pos + 2 * c)
    pieces.append(rs.process(pcm[pos:]))
    out = np.frombuffer(b"".join(pieces) + rs.flush(), dtype="<i2").astype(np.int32)
    ref = one_shot(make_resampler(a, b, engine), x).astype(np.int32)
    assert len(out) == len(ref)
    assert np.abs(out - ref).max() <= 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b"), DIRECTIONS)
def test_no_drift_over_a_long_stream(engine: str, a: int, b: int) -> None:
    """What the filter holds back must not grow: 30 s fed in 20 ms frames."""
    rs = make_resampler(a, b, engine)
    pcm = np.resize(speech(a), a * 30).tobytes()
    fed = out = 0
    held = []
    for f in frames(pcm, a):
        fed += len(f) // 2
        out += len(rs.process(f)) // 2
        held.append(fed * b // a - out)
    early, late = held[10:510], held[-500:]
    print(
        f"{engine} {a}->{b}: held back early {min(early)}..{max(early)}, late {min(late)}..{max(late)}"
    )
    assert abs(max(late) - max(early)) <= 2
    assert abs(min(late) - min(early)) <= 2
    assert 0 <= min(held) and max(held) <= b // 10  # never more than 100 ms inside
    tail = len(rs.flush()) // 2
    assert abs(out + tail - fed * b / a) <= 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b"), DIRECTIONS)
def test_flush_ends_a_segment_and_the_next_one_starts_clean(engine: str, a: int, b: int) -> None:
    rs = make_resampler(a, b, engine)
    first = tone(1000.0, a, 0.5)
    second = speech(a)[: a // 2]
    assert len(stream(rs, first)) == round(len(first) * b / a)
    again = stream(rs, second)
    fresh = stream(make_resampler(a, b, engine), second)
    assert len(again) == len(fresh)
    assert np.abs(again.astype(np.int32) - fresh.astype(np.int32)).max() <= 1
    assert rs.flush() == b""  # nothing fed since the last flush


def square(rate: int, seconds: float = 1.0) -> np.ndarray:
    """A full-scale 250 Hz square wave (+1/-1 before scaling)."""
    n = np.arange(int(rate * seconds))
    return np.where(n % (rate // 250) < rate // 500, 1.0, -1.0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("a", "b"), DIRECTIONS)
def test_full_scale_input_clips_instead_of_wrapping(engine: str, a: int, b: int) -> None:
    # A full-scale square wave overshoots after filtering; wrapping would flip those samples' sign.
    x = np.where(square(a) > 0, 32767, -32768).astype("<i2")
    y = steady(stream(make_resampler(a, b, engine), x), b).astype(np.float64)
    ref = steady(square(b), b)
    wrapped = np.sign(y) != ref  # wrong sign anywhere but next to an edge means wrap-around
    edges = np.convolve(np.abs(np.diff(ref, prepend=ref[0])) > 0, np.ones(b // 1000), "same") > 0
    margin = b // 1000
    assert not np.any((wrapped & ~edges)[margin:-margin])
    assert np.abs(y).max() >= 32000  # the overshoot was clipped, not scaled away


def test_equal_rates_pass_through() -> None:
    rs = make_resampler(8000, 8000, "soxr")
    assert isinstance(rs, PassThrough)
    data = b"\x01\x02\x03\x04"
    assert rs.process(data) is data
    assert rs.flush() == b""
    assert (rs.in_rate, rs.out_rate) == (8000, 8000)


@pytest.mark.parametrize("engine", ENGINES)
def test_odd_byte_input_is_refused_and_loses_nothing(engine: str) -> None:
    rs = make_resampler(8000, 24000, engine)
    x = tone(1000.0, 8000, 0.2).tobytes()
    with pytest.raises(ValueError, match="ByteCarry"):
        rs.process(x[:321])
    out = np.frombuffer(rs.process(x) + rs.flush(), dtype="<i2")
    ref = one_shot(make_resampler(8000, 24000, engine), np.frombuffer(x, dtype="<i2"))
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_input_gives_empty_output(engine: str) -> None:
    rs = make_resampler(24000, 8000, engine)
    assert rs.process(b"") == b""
    assert rs.flush() == b""


def test_implementations_satisfy_the_protocol() -> None:
    for engine in ENGINES:
        for a, b in [*DIRECTIONS, (8000, 8000)]:
            rs = make_resampler(a, b, engine)
            assert isinstance(rs, StreamResampler)
            assert (rs.in_rate, rs.out_rate) == (a, b)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown resampler engine 'speex'"):
        make_resampler(8000, 24000, "speex")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integers"):
        make_resampler(0, 24000)
    with pytest.raises(ValueError, match="positive integers"):
        make_resampler(8000.0, 24000)  # type: ignore[arg-type]


def test_bench_runs_and_agrees_with_the_criteria() -> None:
    from fsbridge.bench_resample import collect, format_table

    report = collect(runs=1, seconds=0.2, directions=[(8000, 24000), (24000, 8000)])
    assert len(report["results"]) == 4
    for r in report["results"]:
        assert r["us_per_frame"] > 0
        assert abs(r["gain_1k_db"]) <= 0.5 and abs(r["gain_3k_db"]) <= 0.5
        assert r["stopband_db"] >= 60
        assert 0 <= r["held_back_ms_mean"] <= r["held_back_ms_max"] <= 100
    assert "soxr HQ" in format_table(report)
