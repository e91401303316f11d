"""The conversation of one simulated session: items in order, their audio, and id generation."""

from __future__ import annotations

import copy
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conversation", "IdGen", "ItemRecord"]

_ALPHABET = string.ascii_letters + string.digits


class IdGen:
    """Ids shaped like the server's (``event_``/``item_``/``resp_`` + 21 base62 characters)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def token(self, n: int) -> str:
        return "".join(self._rng.choice(_ALPHABET) for _ in range(n))

    def new(self, prefix: str, n: int = 21) -> str:
        return f"{prefix}_{self.token(n)}"


@dataclass
class ItemRecord:
    """One conversation item as the server holds it (the GA item dict plus its audio bytes)."""

    item: dict[str, Any]
    audio: bytearray = field(default_factory=bytearray)
    bytes_per_ms: int = 48
    transcript: str = ""  # assistant audio: the transcript kept in context (cut by truncation)
    truncated_ms: int | None = None
    previous_item_id: str | None = None
    output_audio: bool = False  # an assistant audio message (truncatable), even while in progress

    @property
    def id(self) -> str:
        return str(self.item["id"])

    @property
    def role(self) -> str | None:
        return self.item.get("role")

    @property
    def type(self) -> str:
        return str(self.item.get("type"))

    @property
    def is_assistant_audio(self) -> bool:
        return self.output_audio or (
            self.type == "message"
            and self.role == "assistant"
            and any(c.get("type") == "output_audio" for c in self.item.get("content", []))
        )

    @property
    def audio_ms(self) -> float:
        full = len(self.audio) / self.bytes_per_ms
        return full if self.truncated_ms is None else min(full, float(self.truncated_ms))

    def public(self) -> dict[str, Any]:
        """What tests see: the item, plus ``audio_ms`` (and ``truncated_ms``) for audio items."""
        out = copy.deepcopy(self.item)
        if self.audio or self.is_assistant_audio:
            out["audio_ms"] = self.audio_ms
        if self.truncated_ms is not None:
            out["truncated_ms"] = self.truncated_ms
        return out


class Conversation:
    """Ordered items; ``add`` honours ``previous_item_id`` (``"root"`` = the beginning)."""

    def __init__(self) -> None:
        self._items: list[ItemRecord] = []

    def __iter__(self) -> Iterator[ItemRecord]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> ItemRecord | None:
        return next((r for r in self._items if r.id == item_id), None)

    def add(self, rec: ItemRecord, previous_item_id: str | None = None) -> str | None:
        """Insert after ``previous_item_id`` (None = at the end); return the id before it.

        Raises KeyError for an unknown previous id; the caller turns that into an error event.
        """
        if previous_item_id is None:
            prev = self._items[-1].id if self._items else None
            self._items.append(rec)
        elif previous_item_id == "root":
            prev = None
            self._items.insert(0, rec)
        else:
            idx = next((i for i, r in enumerate(self._items) if r.id == previous_item_id), None)
            if idx is None:
                raise KeyError(previous_item_id)
            prev = previous_item_id
            self._items.insert(idx + 1, rec)
        rec.previous_item_id = prev
        return prev

    def remove(self, item_id: str) -> bool:
        rec = self.get(item_id)
        if rec is None:
            return False
        self._items.remove(rec)
        return True

    def call_ids(self) -> set[str]:
        return {
            str(r.item["call_id"])
            for r in self._items
            if r.type == "function_call" and r.item.get("call_id")
        }
