"""The conversation of one simulated session: items in order, their audio, and id generation."""

from __future__ import annotations

import base64
import binascii
import copy
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fsbridge.sim.rt_config import ParamError
from fsbridge.sim.rt_errors import INVALID_AUDIO_MESSAGE

__all__ = ["Conversation", "IdGen", "ItemRecord", "parse_client_item"]

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
            str(r.item["call_id"]) for r in self._items if r.type == "function_call" and r.item.get("call_id")
        }


def _missing(path: str) -> ParamError:
    return ParamError("missing_required_parameter", f"Missing required parameter: '{path}'.", path)


def _need_str(obj: dict[str, Any], key: str, path: str) -> str:
    if key not in obj:
        raise _missing(f"{path}.{key}")
    if not isinstance(obj[key], str):
        raise ParamError(
            "invalid_type",
            f"Invalid type for '{path}.{key}': expected a string, but got {type(obj[key]).__name__} instead.",
            f"{path}.{key}",
        )
    return obj[key]


_CONTENT_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text",),  # assistant *audio* cannot be created (reference §4.1)
}


def parse_client_item(item: Any, new_id: str, bytes_per_ms: int) -> ItemRecord:
    """Validate the ``item`` of ``conversation.item.create`` into a stored record.

    The echo (``conversation.item.added``) never carries audio bytes; they stay in the record.
    """
    if not isinstance(item, dict):
        raise ParamError("invalid_type", "Invalid type for 'item': expected an object.", "item")
    kind = item.get("type")
    if kind is None:
        raise _missing("item.type")
    base = {"id": item.get("id") or new_id, "object": "realtime.item", "type": kind, "status": "completed"}
    if kind == "message":
        role = _need_str(item, "role", "item")
        if role not in _CONTENT_TYPES:
            raise ParamError(
                "invalid_value",
                f"Invalid value: '{role}'. Supported values are: 'user', 'system', and 'assistant'.",
                "item.role",
            )
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise _missing("item.content")
        parts, audio = [], bytearray()
        for i, part in enumerate(content):
            path = f"item.content[{i}]"
            if not isinstance(part, dict):
                raise ParamError("invalid_type", f"Invalid type for '{path}': expected an object.", path)
            ptype = _need_str(part, "type", path)
            if ptype not in _CONTENT_TYPES[role]:
                allowed = ", ".join(f"'{t}'" for t in _CONTENT_TYPES[role])
                raise ParamError(
                    "invalid_value",
                    f"Invalid value: '{ptype}'. Supported values are: {allowed}.",
                    f"{path}.type",
                )
            if ptype in ("input_text", "output_text"):
                parts.append({"type": ptype, "text": _need_str(part, "text", path)})
            elif ptype == "input_audio":
                try:
                    audio += base64.b64decode(_need_str(part, "audio", path), validate=True)
                except (binascii.Error, ValueError):
                    raise ParamError("invalid_value", INVALID_AUDIO_MESSAGE, f"{path}.audio") from None
                parts.append({"type": "input_audio", "transcript": part.get("transcript")})
            else:
                parts.append({k: v for k, v in part.items()})
        return ItemRecord(
            item={**base, "role": role, "content": parts}, audio=audio, bytes_per_ms=bytes_per_ms
        )
    if kind == "function_call":
        fields = {k: _need_str(item, k, "item") for k in ("name", "arguments")}
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise _missing("item.call_id")
        return ItemRecord(item={**base, "call_id": call_id, **fields})
    if kind == "function_call_output":
        call_id = _need_str(item, "call_id", "item")
        output = _need_str(item, "output", "item")
        return ItemRecord(item={**base, "call_id": call_id, "output": output})
    raise ParamError(
        "invalid_value",
        f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', and "
        "'function_call_output'.",
        "item.type",
    )
