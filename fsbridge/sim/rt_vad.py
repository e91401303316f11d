"""Energy voice activity detection on the appended input audio (sans-I/O).

The real server runs a neural VAD; the simulator needs something predictable whose timing tests can
compute by hand. Its time axis is the *appended audio* (milliseconds since the first byte appended
this session), never wall time, so a client that streams faster or slower than real time gets the
same ``audio_start_ms`` / ``audio_end_ms``.

Rules (10 ms frames):
- a frame is voiced when its RMS level in dBFS is at least ``level_dbfs(threshold)``, a linear map of
  the 0..1 threshold onto -70..-20 dBFS (0.5 -> -45 dBFS; higher needs louder audio, as on the server);
- speech starts after ``min_speech_ms`` of consecutive voiced frames; ``audio_start_ms`` is the onset
  minus ``prefix_padding_ms`` (never before ``floor_ms``, the start of the uncommitted buffer);
- speech stops after ``silence_duration_ms`` of consecutive unvoiced frames; ``audio_end_ms`` is the
  point of detection (last voiced frame end + silence), which is the end of the committed audio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

FRAME_MS = 10
FLOOR_DBFS = -70.0
RANGE_DB = 50.0


def level_dbfs(threshold: float) -> float:
    """The RMS level (dBFS) a 10 ms frame needs to count as speech at this threshold."""
    return FLOOR_DBFS + RANGE_DB * min(1.0, max(0.0, threshold))


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["start", "stop"]
    audio_ms: int  # start: audio_start_ms (incl. prefix padding); stop: audio_end_ms
    detected_ms: int  # where on the input timeline the decision was made


class EnergyVad:
    """Fed input bytes in any chunking; returns start/stop decisions on the input timeline."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 200,
        min_speech_ms: int = 30,
        bytes_per_ms: int = 48,
        decode: Callable[[bytes], np.ndarray] | None = None,
        start_ms: int = 0,
    ) -> None:
        self.threshold = threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.min_speech_frames = max(1, math.ceil(min_speech_ms / FRAME_MS))
        self.silence_frames = max(1, math.ceil(silence_duration_ms / FRAME_MS))
        self._frame_bytes = FRAME_MS * bytes_per_ms
        self._decode = decode or (lambda b: np.frombuffer(b, dtype="<i2"))
        self._level = level_dbfs(threshold)
        self._pending = b""
        self.position_ms = start_ms  # end of the last whole frame analysed
        self.floor_ms = start_ms
        self.in_speech = False
        self._voiced_run = 0
        self._silent_run = 0

    def reset(self, at_ms: int) -> None:
        """Forget any speech in progress; new speech may not start before ``at_ms``."""
        self.in_speech = False
        self._voiced_run = 0
        self._silent_run = 0
        self.floor_ms = max(self.floor_ms, at_ms)

    def set_floor(self, at_ms: int) -> None:
        self.floor_ms = max(self.floor_ms, at_ms)

    def _voiced(self, frame: bytes) -> bool:
        samples = self._decode(frame).astype(np.float64) / 32768.0
        if samples.size == 0:
            return False
        rms = math.sqrt(float(np.mean(samples * samples)))
        return rms > 0 and 20.0 * math.log10(rms) >= self._level

    def feed(self, data: bytes) -> list[VadEvent]:
        buf = self._pending + data
        n = len(buf) // self._frame_bytes
        self._pending = buf[n * self._frame_bytes :]
        events: list[VadEvent] = []
        for i in range(n):
            frame = buf[i * self._frame_bytes : (i + 1) * self._frame_bytes]
            self.position_ms += FRAME_MS
            if self._voiced(frame):
                self._voiced_run += 1
                self._silent_run = 0
                if not self.in_speech and self._voiced_run >= self.min_speech_frames:
                    self.in_speech = True
                    onset = self.position_ms - self._voiced_run * FRAME_MS
                    start = max(self.floor_ms, onset - self.prefix_padding_ms)
                    events.append(VadEvent("start", start, self.position_ms))
            else:
                self._voiced_run = 0
                if self.in_speech:
                    self._silent_run += 1
                    if self._silent_run >= self.silence_frames:
                        self.in_speech = False
                        self._silent_run = 0
                        self.floor_ms = self.position_ms
                        events.append(VadEvent("stop", self.position_ms, self.position_ms))
        return events
