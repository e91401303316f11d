"""Resampler micro-benchmark: cost per 20 ms frame, latency and quality of each engine.

``python -m fsbridge.bench_resample [--variants] [--runs N] [--json]`` prints medians;
``fsbridge bench`` calls :func:`run_resampler_bench` (one summary line per engine and direction). The figures in ``docs/performance.md`` come
from here. Timing uses real speech from the package assets, fed frame by frame through the same
``StreamResampler`` objects the calls use (bytes in, bytes out, conversions included), after a
warm-up, as the median of several runs. Quality is measured with pure tones: the filter itself in
float (what the library does) and end to end through int16 (what the caller hears).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np

from fsbridge.audio.resample import (
    PassThrough,
    SamplerateResampler,
    SoxrResampler,
    StreamResampler,
)
from fsbridge.audio.wav import parse_wav

__all__ = ["DIRECTIONS", "collect", "format_table", "main", "measure", "run_resampler_bench"]

FRAME_MS = 20
DIRECTIONS: tuple[tuple[int, int], ...] = (
    (8000, 24000),
    (16000, 24000),
    (24000, 8000),
    (24000, 16000),
)
# (engine, variant) -> factory; DEFAULTS are what make_resampler builds for each engine.
VARIANTS: dict[tuple[str, str], Callable[[int, int], StreamResampler]] = {
    ("soxr", "HQ"): lambda a, b: SoxrResampler(a, b, "HQ"),
    ("samplerate", "sinc_medium"): lambda a, b: SamplerateResampler(a, b, "sinc_medium"),
    ("soxr", "MQ"): lambda a, b: SoxrResampler(a, b, "MQ"),
    ("soxr", "VHQ"): lambda a, b: SoxrResampler(a, b, "VHQ"),
    ("samplerate", "sinc_fastest"): lambda a, b: SamplerateResampler(a, b, "sinc_fastest"),
    ("samplerate", "sinc_best"): lambda a, b: SamplerateResampler(a, b, "sinc_best"),
}
DEFAULTS = (("soxr", "HQ"), ("samplerate", "sinc_medium"))
_ASSETS = {
    8000: "caller-en-hello-8k.wav",
    16000: "caller-en-hello-16k.wav",
    24000: "reply-en-short-24k.wav",
}


def _speech(rate: int, seconds: float) -> bytes:
    """Real speech at ``rate`` (looped to length), or noise when no asset exists for the rate."""
    n = int(rate * seconds)
    name = _ASSETS.get(rate)
    if name is None:
        x = (np.random.default_rng(7).standard_normal(n) * 3000).astype(np.int16)
    else:
        samples, file_rate = parse_wav((resources.files("fsbridge") / "assets" / name).read_bytes())
        if file_rate != rate:
            raise RuntimeError(f"asset {name} is {file_rate} Hz, expected {rate}")
        x = np.resize(samples, n)
    return x.astype("<i2").tobytes()


def _frames(pcm: bytes, rate: int) -> list[bytes]:
    step = rate * FRAME_MS // 1000 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]


def time_per_frame(
    factory: Callable[[int, int], StreamResampler],
    in_rate: int,
    out_rate: int,
    *,
    runs: int = 7,
    seconds: float = 5.0,
    warmup_frames: int = 50,
) -> list[float]:
    """Microseconds per 20 ms frame for each run (one resampler for all runs, as in a call)."""
    frames = _frames(_speech(in_rate, seconds), in_rate)
    rs = factory(in_rate, out_rate)
    for f in frames[:warmup_frames]:
        rs.process(f)
    out: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        for f in frames:
            rs.process(f)
        out.append((time.perf_counter_ns() - t0) / len(frames) / 1000.0)
    return out


def held_back_ms(rs: StreamResampler, in_rate: int, seconds: float = 2.0) -> tuple[float, float]:
    """Mean and max audio held inside the resampler after each frame, at steady state (ms)."""
    frames = _frames(_speech(in_rate, seconds), in_rate)
    fed = out = 0
    held: list[float] = []
    for k, f in enumerate(frames):
        fed += len(f) // 2
        out += len(rs.process(f)) // 2
        if k >= 10:
            held.append((fed * rs.out_rate / in_rate - out) * 1000.0 / rs.out_rate)
    rs.flush()
    return statistics.fmean(held), max(held)


def _tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * 32767.0 * np.sin(2 * np.pi * freq * t)


def _steady(y: np.ndarray, rate: int) -> np.ndarray:
    """Drop the first and last 100 ms (filter start-up and tail)."""
    edge = rate // 10
    return y[edge : len(y) - edge]


def _fit(y: np.ndarray, freq: float, rate: int) -> tuple[float, float]:
    """(amplitude of the ``freq`` component, rms of everything else) by least squares."""
    t = np.arange(len(y)) / rate
    m = np.column_stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(m, y, rcond=None)
    resid = y - m @ coef
    return float(np.hypot(*coef)), float(np.sqrt(np.mean(resid**2)))


def _through_int16(rs: StreamResampler, x: np.ndarray) -> np.ndarray:
    pcm = np.rint(x).astype("<i2").tobytes()
    step = rs.in_rate * FRAME_MS // 1000 * 2
    out = b"".join(rs.process(pcm[i : i + step]) for i in range(0, len(pcm), step)) + rs.flush()
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def _through_float(rs: StreamResampler, x: np.ndarray) -> np.ndarray:
    # The filter alone, without int16 rounding: feed the engine its float32 input directly.
    if isinstance(rs, PassThrough):
        return x
    y = rs._run(x.astype(np.float32))  # type: ignore[attr-defined]
    return np.asarray(y, dtype=np.float64)


def _passband_tones(rate: int) -> list[float]:
    return (
        [300.0, 1000.0, 2000.0, 3000.0, 3400.0]
        if rate <= 8000
        else [300.0, 1000.0, 3000.0, 5000.0, 7000.0]
    )


def quality(factory: Callable[[int, int], StreamResampler], a: int, b: int) -> dict[str, float]:
    """Passband deviation, stopband attenuation / image rejection and SNR for one direction."""
    narrow = min(a, b)
    gains: dict[float, float] = {}
    for f in _passband_tones(narrow):
        amp, _ = _fit(_steady(_through_int16(factory(a, b), _tone(f, a)), b), f, b)
        gains[f] = float(20 * np.log10(amp / (0.5 * 32767.0)))
    snr_tone = 3400.0 if narrow <= 8000 else 7000.0
    x = _tone(snr_tone, a)
    amp, rest = _fit(_steady(_through_float(factory(a, b), x), b), snr_tone, b)
    amp16, rest16 = _fit(_steady(_through_int16(factory(a, b), x), b), snr_tone, b)
    res = {
        "passband_dev_db": max(abs(g) for g in gains.values()),
        "gain_1k_db": gains[1000.0],
        "gain_3k_db": gains[3000.0],
        "snr_db": float(20 * np.log10(amp / rest)),
        "snr_int16_db": float(20 * np.log10(amp16 / rest16)),
        "snr_tone_hz": snr_tone,
    }
    if b < a:  # downsampling: a tone above the output Nyquist must vanish
        stop = 5000.0 if b == 8000 else 9000.0
        x = _tone(stop, a)
        y = _steady(_through_float(factory(a, b), x), b)
        res["stopband_db"] = float(20 * np.log10(np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(y**2))))
        res["stopband_tone_hz"] = stop
    else:  # upsampling: images of a 1 kHz tone above the input Nyquist must vanish
        y = _steady(_through_float(factory(a, b), _tone(1000.0, a)), b)
        spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
        freqs = np.fft.rfftfreq(len(y), 1.0 / b)
        images = spec[freqs > a / 2].sum()
        res["stopband_db"] = float(10 * np.log10(spec.sum() / images))
        res["stopband_tone_hz"] = 1000.0
    return res


def measure(
    engine: str, variant: str, a: int, b: int, *, runs: int = 7, seconds: float = 5.0
) -> dict[str, Any]:
    """All figures for one engine variant and direction."""
    factory = VARIANTS[(engine, variant)]
    per_run = time_per_frame(factory, a, b, runs=runs, seconds=seconds)
    mean_held, max_held = held_back_ms(factory(a, b), a)
    return {
        "engine": engine,
        "variant": variant,
        "in_rate": a,
        "out_rate": b,
        "us_per_frame": statistics.median(per_run),
        "us_per_frame_runs": [round(v, 2) for v in per_run],
        "held_back_ms_mean": mean_held,
        "held_back_ms_max": max_held,
        **quality(factory, a, b),
    }


def collect(
    *,
    variants: bool = False,
    runs: int = 7,
    seconds: float = 5.0,
    directions: Sequence[tuple[int, int]] = DIRECTIONS,
) -> dict[str, Any]:
    """All figures, per engine (and with ``variants`` other quality settings) and direction."""
    chosen = list(VARIANTS) if variants else list(DEFAULTS)
    results = [
        measure(engine, variant, a, b, runs=runs, seconds=seconds)
        for engine, variant in chosen
        for a, b in directions
    ]
    return {"frame_ms": FRAME_MS, "runs": runs, "seconds_per_run": seconds, "results": results}


def run_resampler_bench(*, quick: bool = False, variants: bool = False) -> dict[str, str]:
    """One summary line per engine and direction, for ``fsbridge bench`` (label -> figures).

    ``quick`` times 3 runs of 2 s of audio instead of 7 runs of 5 s.
    """
    report = collect(variants=variants, runs=3 if quick else 7, seconds=2.0 if quick else 5.0)
    return {
        f"{r['engine']} {r['variant']} {r['in_rate'] // 1000}k->{r['out_rate'] // 1000}k": (
            f"{r['us_per_frame']:6.1f} µs/frame | held back {r['held_back_ms_mean']:4.1f}/"
            f"{r['held_back_ms_max']:4.1f} ms | passband {r['passband_dev_db']:.3f} dB | "
            f"stopband {r['stopband_db']:.0f} dB | SNR {r['snr_db']:.0f} dB"
        )
        for r in report["results"]
    }


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`collect` results."""
    head = (
        f"{'engine':<26} {'direction':>12} {'us/frame':>9} {'held ms':>13} "
        f"{'passband':>9} {'stopband':>9} {'SNR':>7} {'SNR16':>6}"
    )
    lines = [
        f"resampler: median of {report['runs']} runs, {report['frame_ms']} ms frames, "
        f"{report['seconds_per_run']:g} s of audio per run",
        head,
        "-" * len(head),
    ]
    for r in report["results"]:
        lines.append(
            f"{r['engine'] + ' ' + r['variant']:<26} {r['in_rate']:>5}->{r['out_rate']:<6}"
            f" {r['us_per_frame']:>9.1f} {r['held_back_ms_mean']:>6.1f}/{r['held_back_ms_max']:<6.1f}"
            f" {r['passband_dev_db']:>7.3f}dB {r['stopband_db']:>7.1f}dB"
            f" {r['snr_db']:>5.1f}dB {r['snr_int16_db']:>5.1f}"
        )
    lines.append(
        "held ms = audio inside the resampler after a frame (mean/max); passband = worst |gain| of "
        "300 Hz..3.4 kHz (7 kHz at 16k); stopband = 5 kHz (9 kHz) tone rejection when down-, "
        "image rejection when upsampling; SNR at 3.4 kHz (7 kHz), float filter / int16 end to end."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fsbridge.bench_resample", description=__doc__)
    p.add_argument(
        "--variants", action="store_true", help="also soxr MQ/VHQ and sinc_fastest/sinc_best"
    )
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--seconds", type=float, default=5.0, help="audio per timed run")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = p.parse_args(argv)
    report = collect(variants=args.variants, runs=args.runs, seconds=args.seconds)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
