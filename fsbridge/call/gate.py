"""A local speech gate on the caller's audio: barge-in before the server's VAD, and end of turn
when there is no server VAD.

The server's ``speech_started`` comes one network round trip plus its VAD's decision time after the
caller started talking; an energy gate on the fork's frames (fork rate, 20 ms) decides in
``min_speech_ms``. The danger of a local gate is our own voice: on many lines part of what we play
comes back on the caller's leg (hybrid or acoustic echo), loud enough to pass any level threshold.
So a voiced frame is compared with what we played in the last ``ECHO_MAX_LAG_MS``: if the
normalised cross-correlation at some lag reaches ``echo_correlation``, it is our echo, not speech.

Cheap on purpose: the level is one dot product on a preallocated float buffer; the correlation runs
only for frames that are voiced *while* something plays. Pure: frames and times are passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ECHO_MAX_LAG_MS", "EchoReference", "GateEvent", "SpeechGate"]

ECHO_MAX_LAG_MS = 300  # longest echo path considered (network + hybrid + jitter buffer)
ECHO_WINDOW_MS = 80  # caller audio compared per decision
FRAME_MS = 20
_FULL_SCALE2 = 32768.0 * 32768.0
_NONE: tuple[GateEvent, ...] = ()


@dataclass(frozen=True)
class GateEvent:
    kind: Literal["speech_start", "speech_end"]
    t: float  # when the gate decided (the caller's frame time)


class EchoReference:
    """What the caller has been hearing from us, at the channel rate, on the bridge's clock.

    ``play`` is told when a file starts playing (PLAYBACK_START) with its samples, ``stop`` when it
    stops (a break cuts it short). ``window`` returns the audio played during a time span.
    """

    def __init__(self, rate: int, keep: int = 3) -> None:
        self.rate = rate
        self._clips: deque[tuple[float, np.ndarray, float]] = deque(maxlen=keep)

    def play(self, samples: np.ndarray, t: float) -> None:
        end = t + len(samples) / self.rate
        self._clips.append((t, np.asarray(samples, dtype=np.int16), end))

    def stop(self, t: float) -> None:
        """The playing clip stopped at ``t`` (cut short on a break; harmless after its end)."""
        if self._clips:
            start, samples, end = self._clips[-1]
            if t < end:
                self._clips[-1] = (start, samples, max(start, t))

    def clear(self) -> None:
        self._clips.clear()

    def active(self, t0: float, t1: float) -> bool:
        """Whether anything we played overlaps ``[t0, t1]``."""
        return any(start < t1 and end > t0 for start, _, end in self._clips)

    def window(self, t0: float, out: np.ndarray) -> None:
        """Fill ``out`` with what was played from ``t0`` on (zeros where nothing played)."""
        out[:] = 0.0
        n = len(out)
        for start, samples, end in self._clips:
            first = round((t0 - start) * self.rate)  # clip index of out[0]
            last = min(round((end - start) * self.rate), len(samples))
            lo, hi = max(first, 0), min(first + n, last)
            if hi > lo:
                out[lo - first : hi - first] = samples[lo:hi]


class SpeechGate:
    """Energy gate with echo rejection. ``feed`` takes frames of any length (int16 LE bytes)."""

    def __init__(
        self,
        rate: int,
        *,
        threshold_db: float,
        min_speech_ms: int,
        end_silence_ms: int,
        echo_correlation: float,
        echo: EchoReference | None = None,
    ) -> None:
        self.rate = rate
        self.frame_len = rate * FRAME_MS // 1000
        self.threshold_db = threshold_db
        self._min_speech = max(1, math.ceil(min_speech_ms / FRAME_MS))
        self._end_silence = max(1, math.ceil(end_silence_ms / FRAME_MS))
        self.echo_correlation = echo_correlation
        self.echo = echo
        self._threshold_energy = self.frame_len * _FULL_SCALE2 * 10 ** (threshold_db / 10)
        self._frame = np.zeros(self.frame_len, dtype=np.float32)
        self._pending = bytearray()
        win = rate * ECHO_WINDOW_MS // 1000
        self._hist = np.zeros(win, dtype=np.float32)  # the last ECHO_WINDOW_MS of caller audio
        self._ref = np.zeros(win + rate * ECHO_MAX_LAG_MS // 1000, dtype=np.float32)
        self.in_speech = False
        self._voiced_run = 0
        self._silent_run = 0
        # counters, for the call summary and tests
        self.frames = 0
        self.voiced_frames = 0
        self.echo_frames = 0
        self.last_correlation = 0.0

    def feed(self, data: bytes, t: float) -> tuple[GateEvent, ...]:
        """Feed caller audio that arrived at ``t``; returns the decisions it led to (usually none)."""
        nbytes = self.frame_len * 2
        if not self._pending and len(data) == nbytes:  # the usual case: one whole 20 ms frame
            event = self._decide(np.frombuffer(data, dtype="<i2"), t)
            return _NONE if event is None else (event,)
        self._pending += data
        events: list[GateEvent] = []
        n = len(self._pending) // nbytes
        for i in range(n):  # odd-sized fork frames: rare, so a copy per frame is fine here
            chunk = np.frombuffer(bytes(self._pending[i * nbytes : (i + 1) * nbytes]), "<i2")
            event = self._decide(chunk, t - (n - 1 - i) * FRAME_MS / 1000)
            if event is not None:
                events.append(event)
        del self._pending[: n * nbytes]
        return tuple(events)

    def _decide(self, samples: np.ndarray, t: float) -> GateEvent | None:
        self.frames += 1
        frame = self._frame
        np.copyto(frame, samples, casting="unsafe")
        hist = self._hist
        hist[: -self.frame_len] = hist[self.frame_len :]
        hist[-self.frame_len :] = frame
        voiced = float(np.dot(frame, frame)) >= self._threshold_energy
        if voiced:
            self.voiced_frames += 1
            if self._is_echo(t):
                self.echo_frames += 1
                voiced = False
        if voiced:
            self._voiced_run += 1
            self._silent_run = 0
            if not self.in_speech and self._voiced_run >= self._min_speech:
                self.in_speech = True
                return GateEvent("speech_start", t)
        else:
            self._voiced_run = 0
            if self.in_speech:
                self._silent_run += 1
                if self._silent_run >= self._end_silence:
                    self.in_speech = False
                    self._silent_run = 0
                    return GateEvent("speech_end", t)
        return None

    def _is_echo(self, t: float) -> bool:
        """Whether the last ECHO_WINDOW_MS of caller audio is a delayed copy of our playback."""
        echo = self.echo
        if echo is None or self.echo_correlation >= 1.0:
            return False
        win = len(self._hist)
        t0 = t - len(self._ref) / self.rate
        if not echo.active(t0, t):
            return False
        ref = self._ref
        echo.window(t0, ref)
        x = self._hist
        xx = float(np.dot(x, x))
        if xx <= 0.0:
            return False
        dots = np.correlate(ref, x, mode="valid")  # one value per lag
        sq = np.cumsum(ref.astype(np.float64) ** 2)
        energies = sq[win - 1 :] - np.concatenate(([0.0], sq[:-win]))
        valid = energies > xx * 1e-4  # a lag where we played (near) silence is no echo
        if not valid.any():
            self.last_correlation = 0.0
            return False
        corr = np.abs(dots[valid]) / np.sqrt(energies[valid] * xx)
        self.last_correlation = float(corr.max())
        return self.last_correlation >= self.echo_correlation

    def reset(self) -> None:
        """Forget speech in progress (e.g. after the turn was committed by DTMF)."""
        self.in_speech = False
        self._voiced_run = 0
        self._silent_run = 0
