"""Audio plumbing of the simulated switch: simple resampling, sound files, the caller's line.

The simulator deliberately does its own plain linear-interpolation resampling (it must not share
the service's resampler); FreeSWITCH resamples a played file to the channel rate and a fork's audio
to the requested rate, and the tests only need that to be continuous and length-correct.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fsbridge.audio.wav import WavError, read_wav
from fsbridge.sim.fs_truth import Utterance

__all__ = [
    "CallerLine",
    "LinearResampler",
    "SoundError",
    "load_sound",
    "resample",
    "to_int16",
]


class SoundError(ValueError):
    """A file FreeSWITCH could not open for playback (missing, not a WAV, not 16-bit PCM...)."""


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-buffer linear resampling (int16 in, int16 out)."""
    if in_rate == out_rate or len(x) == 0:
        return np.asarray(x, dtype=np.int16)
    n_out = round(len(x) * out_rate / in_rate)
    pos = np.arange(n_out) * (in_rate / out_rate)
    return to_int16(np.interp(pos, np.arange(len(x)), x.astype(np.float64)))


class LinearResampler:
    """Streaming linear resampler that stays continuous across frames (one per fork channel)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._step = in_rate / out_rate
        self._n_in = 0  # input samples consumed so far
        self._j = 0  # index of the next output sample
        self._prev = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.in_rate == self.out_rate:
            return x
        if len(x) == 0:
            return np.zeros(0, dtype=np.int16)
        buf = np.concatenate(([self._prev], x.astype(np.float64)))
        idx = np.arange(self._n_in - 1, self._n_in + len(x), dtype=np.float64)
        # exactly out/in samples per input (20 ms in -> 20 ms out); the last position may sit
        # past the newest input sample, which is then held (a half-sample approximation)
        j_end = (self._n_in + len(x)) * self.out_rate // self.in_rate
        times = np.arange(self._j, j_end) * self._step
        y = np.interp(times, idx, buf)
        self._j = j_end
        self._n_in += len(x)
        self._prev = float(x[-1])
        return to_int16(y)


def load_sound(path: str) -> tuple[np.ndarray, int]:
    """Open a file the way mod_sndfile would for playback: WAV (mono 16-bit PCM) or raw .r8/.r16."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".r8", ".r16", ".raw"):
        rate = {".r8": 8000, ".r16": 16000, ".raw": 8000}[ext]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise SoundError(f"cannot open {path}: {exc.strerror or exc}") from None
        return np.frombuffer(data[: len(data) & ~1], dtype="<i2").astype(np.int16), rate
    if not os.path.exists(path):
        raise SoundError(f"cannot open {path}: No such file or directory")
    try:
        return read_wav(path)
    except WavError as exc:
        raise SoundError(f"cannot play {path}: {exc}") from None


@dataclass
class _Clip:
    start_tick: int
    samples: np.ndarray
    record: Utterance


class CallerLine:
    """What the caller sends, tick by tick: scripted utterances over silence, never ending.

    Utterances may overlap (a ``say`` during the script): they are mixed, as two voices would be.
    """

    def __init__(self, frame_len: int) -> None:
        self.frame_len = frame_len
        self._clips: list[_Clip] = []
        self.pending_initial: np.ndarray | None = None
        self.initial_delay_s = 0.0
        self.log: list[Utterance] = []

    def add(self, samples: np.ndarray, start_tick: int) -> Utterance:
        rec = Utterance(start_tick=start_tick, n_samples=len(samples))
        self.log.append(rec)
        if len(samples):
            self._clips.append(_Clip(start_tick, np.asarray(samples, dtype=np.int16), rec))
        return rec

    def start_initial(self, next_tick: int, first_tick_at_delay: int) -> None:
        """The scripted audio starts ``caller_delay_s`` after the first fork connects (on the sim
        clock, so a channel loop running a little late does not shift it)."""
        if self.pending_initial is not None:
            self.add(self.pending_initial, max(next_tick, first_tick_at_delay))
            self.pending_initial = None

    def frame(self, tick: int) -> tuple[np.ndarray, list[Utterance]]:
        """The caller's frame for ``tick`` and the utterances whose first frame this is."""
        out = np.zeros(self.frame_len, dtype=np.int32)
        started: list[Utterance] = []
        keep: list[_Clip] = []
        n = self.frame_len
        for clip in self._clips:
            off = (tick - clip.start_tick) * n
            if off >= len(clip.samples):
                continue  # finished
            keep.append(clip)
            if off + n <= 0:
                continue  # not yet
            if off == 0:
                started.append(clip.record)
            lo = max(off, 0)
            seg = clip.samples[lo : off + n]
            out[lo - off : lo - off + len(seg)] += seg
        self._clips = keep
        return np.clip(out, -32768, 32767).astype(np.int16), started
