"""How a response is delivered: pacing settings, the record tests read, chunking (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ResponseRecord", "Status", "StreamSettings", "chunks", "word_cut"]

Status = Literal["completed", "cancelled", "failed", "incomplete"]


@dataclass(frozen=True)
class StreamSettings:
    delivery_speed: float = 4.0
    delta_ms: int = 100
    first_delta_delay_s: float = 0.15
    odd_deltas: bool = False
    obfuscation: bool = True
    text_words_per_delta: int = 3
    args_delta_chars: int = 12
    args_delta_interval_s: float = 0.02
    # UNCONFIRMED (reference §5.1): which of the two item "done" events comes first.
    output_item_done_first: bool = True


@dataclass
class ResponseRecord:
    """What the simulator did for one response (for tests; times are on the SimClock)."""

    id: str
    trigger: str  # "vad" | "client" | "idle"
    created_t: float
    kind: str = "audio"  # "audio" | "text" | "function_call"
    instructions: str | None = None
    status: str = "in_progress"
    reason: str | None = None
    error: dict[str, Any] | None = None
    first_delta_t: float | None = None
    done_t: float | None = None
    deltas: list[tuple[float, str, int]] = field(default_factory=list)  # (t, item_id, nbytes)
    audio_bytes_sent: int = 0
    bytes_per_ms: int = 48
    item_ids: list[str] = field(default_factory=list)
    transcript_sent: str = ""
    usage: dict[str, Any] | None = None

    @property
    def audio_ms_sent(self) -> float:
        return self.audio_bytes_sent / self.bytes_per_ms


def chunks(data: bytes, size: int, odd: bool) -> list[bytes]:
    if not data:
        return []
    if not odd or size < 2:
        return [data[i : i + size] for i in range(0, len(data), size)]
    out, pos, k = [], 0, 0
    while pos < len(data):
        n = size + (1 if k % 2 == 0 else -1)  # odd lengths: boundaries on odd offsets
        out.append(data[pos : pos + n])
        pos += n
        k += 1
    return out


def word_cut(text: str, n: int) -> int:
    """Extend a cut point to the end of the word it falls in."""
    if n <= 0:
        return 0
    if n >= len(text):
        return len(text)
    while n < len(text) and not text[n].isspace():
        n += 1
    return n
