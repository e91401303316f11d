"""Whole-sample framing for 16-bit PCM byte streams.

Transports cut audio wherever they like: a Realtime output delta with an odd byte length has been
reported, and nothing promises that WebSocket frames end on a sample boundary. Resamplers and the
Realtime input buffer need whole int16 samples, so the odd byte is held back and glued to the next
chunk instead of being dropped (which would shift every later sample by one byte: loud noise).
"""

from __future__ import annotations

__all__ = ["SAMPLE_WIDTH", "ByteCarry", "pcm_ms"]

SAMPLE_WIDTH = 2  # bytes per mono int16 sample


class ByteCarry:
    """Keeps one odd trailing byte across chunks so that every output is whole int16 samples."""

    __slots__ = ("_odd",)

    def __init__(self) -> None:
        self._odd: bytes = b""

    def feed(self, data: bytes) -> bytes:
        """Return the longest even-length prefix of (carried byte + ``data``); keep the rest.

        Nothing is copied in the common case (no carried byte, even length).
        """
        if self._odd:
            data = self._odd + data
            self._odd = b""
        if len(data) & 1:
            self._odd = bytes(data[-1:])
            return bytes(data[:-1])
        return bytes(data) if not isinstance(data, bytes) else data

    @property
    def pending(self) -> int:
        """Bytes held back (0 or 1)."""
        return len(self._odd)

    def reset(self) -> None:
        """Drop the carried byte (at the start of an unrelated stream, e.g. a new reply)."""
        self._odd = b""

    def __repr__(self) -> str:
        return f"ByteCarry(pending={len(self._odd)})"


def pcm_ms(nbytes: int, rate: int) -> float:
    """Duration in milliseconds of ``nbytes`` of mono int16 PCM at ``rate`` Hz."""
    return nbytes * 1000.0 / (SAMPLE_WIDTH * rate)
