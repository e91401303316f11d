"""The input audio buffer of one session: timeline, uncommitted bytes and the VAD (sans-I/O).

Times are milliseconds of appended audio since the session started (the server's ``audio_*_ms``
axis). A VAD commit takes the speech segment ``[audio_start_ms, audio_end_ms)`` as the user item and
leaves what follows the detection point in the buffer; a manual commit or clear takes everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsbridge.sim.rt_audio import bytes_per_ms, decode_samples
from fsbridge.sim.rt_vad import EnergyVad, VadEvent

__all__ = ["InputBuffer"]


class InputBuffer:
    def __init__(self, fmt: dict[str, Any] | None = None) -> None:
        self._fmt = fmt or {"type": "audio/pcm", "rate": 24000}
        self.bytes_per_ms = bytes_per_ms(self._fmt)
        self.timeline_ms = 0.0
        self.start_ms = 0.0  # timeline position of the first uncommitted byte
        self._buf = bytearray()
        self.vad: EnergyVad | None = None

    @property
    def buffered_ms(self) -> float:
        return len(self._buf) / self.bytes_per_ms

    @property
    def in_speech(self) -> bool:
        return self.vad is not None and self.vad.in_speech

    def set_format(self, fmt: dict[str, Any]) -> None:
        self._fmt = fmt
        self.bytes_per_ms = bytes_per_ms(fmt)

    def configure_vad(
        self,
        td: Mapping[str, Any] | None,
        *,
        min_speech_ms: int,
        semantic_silence_ms: Mapping[str, int],
        semantic_prefix_ms: int,
    ) -> None:
        """(Re)build the VAD for a turn_detection config; None switches VAD off."""
        if td is None:
            self.vad = None
            return
        if td["type"] == "semantic_vad":
            # semantic_vad is simulated as energy VAD whose silence depends on the eagerness.
            threshold, prefix = 0.5, semantic_prefix_ms
            silence = semantic_silence_ms.get(td.get("eagerness") or "auto", 800)
        else:
            threshold = float(td.get("threshold", 0.5))
            prefix = int(td.get("prefix_padding_ms", 300))
            silence = int(td.get("silence_duration_ms", 200))
        fmt = dict(self._fmt)
        self.vad = EnergyVad(
            threshold=threshold,
            prefix_padding_ms=prefix,
            silence_duration_ms=silence,
            min_speech_ms=min_speech_ms,
            bytes_per_ms=self.bytes_per_ms,
            decode=lambda b: decode_samples(fmt, b),
            start_ms=round(self.timeline_ms),
        )
        self.vad.set_floor(round(self.start_ms))

    def append(self, data: bytes) -> list[VadEvent]:
        self._buf.extend(data)
        self.timeline_ms += len(data) / self.bytes_per_ms
        return self.vad.feed(data) if self.vad is not None else []

    def _offset(self, ms: float) -> int:
        n = round((ms - self.start_ms) * self.bytes_per_ms)
        n = min(max(0, n), len(self._buf))
        return n - n % 2 if self.bytes_per_ms == 48 else n

    def take_segment(self, start_ms: float, end_ms: float) -> bytes:
        """The VAD commit: return [start, end) and drop the buffer up to ``end``."""
        a, b = self._offset(start_ms), self._offset(end_ms)
        segment = bytes(self._buf[a:b])
        del self._buf[:b]
        self.start_ms += b / self.bytes_per_ms
        return segment

    def take_all(self) -> bytes:
        """A manual commit (or a clear): everything buffered; VAD state starts over."""
        data = bytes(self._buf)
        self._buf.clear()
        self.start_ms = self.timeline_ms
        if self.vad is not None:
            self.vad.reset(round(self.timeline_ms))
        return data
