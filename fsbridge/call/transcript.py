"""What was said on a call, turn by turn, as text.

Both sides arrive out of order: the caller's words come from input transcription
(``conversation.item.input_audio_transcription.completed``), asynchronously and possibly after the
reply; the model's words from ``response.output_audio_transcript.done``. So a turn is opened when its
item appears (the caller's commit, the model's first audio) and filled in when its text arrives;
the order of turns is the order of the conversation, not of the transcripts.

When the caller interrupts, the model's reply is cut to what was heard (``conversation.item.
truncated``); its transcript is cut to the same fraction of its audio, dropping a half-heard word
(an approximation: words are not evenly spread over the audio). The same text seeds a new Realtime
session when an old one must be replaced (see ``renewal``), so the new model remembers what the
caller heard, not what the old one generated. Pure: times are passed in.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..realtime import protocol as rtp

__all__ = ["Transcript", "Turn", "cut_to_fraction", "format_setvars"]

Role = Literal["user", "assistant", "system"]


def cut_to_fraction(text: str, fraction: float) -> str:
    """The words of ``text`` within ``fraction`` of it; a word cut in half is dropped."""
    fraction = min(1.0, max(0.0, fraction))
    n = math.floor(len(text) * fraction + 1e-9)
    if n >= len(text):
        return text
    if n > 0 and not text[n].isspace() and not text[n - 1].isspace():
        n = text.rfind(" ", 0, n)
        n = max(n, 0)
    return text[:n].rstrip()


@dataclass
class Turn:
    role: Role
    item_id: str | None
    start_s: float
    end_s: float
    text: str | None = None
    full_text: str | None = None  # the model's text before a truncation
    heard_fraction: float | None = None  # set by a truncation: heard ms / generated ms
    source: str = "voice"  # voice | dtmf | text (say / admin)

    @property
    def truncated(self) -> bool:
        return self.heard_fraction is not None and self.heard_fraction < 1.0

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "role": self.role,
            "text": self.text or "",
            "item_id": self.item_id,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
        }
        if self.source != "voice":
            out["source"] = self.source
        if self.truncated:
            out["truncated"] = True
            out["heard_fraction"] = round(self.heard_fraction or 0.0, 3)
        return out


class Transcript:
    """The turns of one call. Times are seconds since the call started (the caller's clock)."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self._by_item: dict[str, Turn] = {}

    def _turn(self, role: Role, item_id: str, t: float) -> Turn:
        turn = self._by_item.get(item_id)
        if turn is None:
            turn = Turn(role, item_id, t, t)
            self.turns.append(turn)
            self._by_item[item_id] = turn
        return turn

    # -- the caller ------------------------------------------------------------------------------
    def user_audio(self, item_id: str, t: float, start_s: float | None = None) -> None:
        """The caller's turn was committed (its text follows from transcription, if enabled)."""
        turn = self._turn("user", item_id, t)
        if start_s is not None:
            turn.start_s = min(turn.start_s, start_s)
        turn.end_s = max(turn.end_s, t)

    def user_text(self, item_id: str, text: str, t: float) -> None:
        turn = self._turn("user", item_id, t)
        turn.text = text.strip()

    def note(self, role: Role, text: str, t: float, source: str) -> None:
        """A text item the bridge added itself (DTMF, ``Call.say``)."""
        self.turns.append(Turn(role, None, t, t, text, source=source))

    # -- the model -------------------------------------------------------------------------------
    def assistant_audio(self, item_id: str, t: float) -> None:
        turn = self._turn("assistant", item_id, t)
        turn.end_s = max(turn.end_s, t)

    def assistant_text(self, item_id: str, text: str, t: float) -> None:
        turn = self._turn("assistant", item_id, t)
        turn.full_text = text.strip()
        turn.end_s = max(turn.end_s, t)
        self._apply_cut(turn)

    def truncated(self, item_id: str, audio_end_ms: float, generated_ms: float) -> None:
        """The model's item was cut to ``audio_end_ms`` of its ``generated_ms`` of audio."""
        turn = self._by_item.get(item_id)
        if turn is None or turn.role != "assistant":
            return
        turn.heard_fraction = 1.0 if generated_ms <= 0 else min(1.0, audio_end_ms / generated_ms)
        self._apply_cut(turn)

    @staticmethod
    def _apply_cut(turn: Turn) -> None:
        if turn.full_text is None:
            return
        frac = 1.0 if turn.heard_fraction is None else turn.heard_fraction
        turn.text = cut_to_fraction(turn.full_text, frac)

    # -- output ----------------------------------------------------------------------------------
    def spoken(self) -> list[Turn]:
        """Turns that have text (a caller turn without transcription has none)."""
        return [t for t in self.turns if t.text]

    def count(self, role: Role | None = None) -> int:
        return sum(1 for t in self.spoken() if role is None or t.role == role)

    def to_jsonl(self) -> str:
        return "".join(
            json.dumps(t.as_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
            for t in self.spoken()
        )

    def write(self, path: Path) -> None:
        """Write the JSONL file atomically (a reader never sees half a transcript)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_jsonl(), encoding="utf-8")
        os.replace(tmp, path)

    def seed_events(self, start: int = 0) -> tuple[list[dict], int]:
        """``conversation.item.create`` events for spoken turns from index ``start`` of
        ``turns`` (ignoring turns still waiting for text at the end), and the next index."""
        end = len(self.turns)
        while end > start and self.turns[end - 1].text is None:
            end -= 1  # an unfinished turn at the end: seed it with the next batch
        events = [rtp.message_item(t.role, t.text) for t in self.turns[start:end] if t.text]
        return events, end


def format_setvars(values: Mapping[str, str]) -> str:
    """The ``var=value;var=value`` argument of ``uuid_setvar_multi`` (``;`` cannot be escaped)."""
    parts = []
    for name, value in values.items():
        clean = str(value).replace(";", ",").replace("\n", " ")
        parts.append(f"{name}={clean}")
    return ";".join(parts)
