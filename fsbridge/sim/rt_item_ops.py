"""Conversation item commands: create, truncate, retrieve — their rules and errors (pure).

``conversation.item.create`` accepts text messages, user audio, function calls and function call
outputs (only for a known ``call_id``); assistant *audio* cannot be created (reference §4.1).
``conversation.item.truncate`` only applies to assistant audio and never beyond its length; it
shortens the item's audio and drops the transcript words the caller did not hear.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
from typing import Any

from fsbridge.sim import rt_errors as E
from fsbridge.sim.rt_items import Conversation, ItemRecord
from fsbridge.sim.rt_schema import ParamError
from fsbridge.sim.rt_usage import transcription_usage

__all__ = [
    "create_item",
    "cut_words",
    "find_item",
    "parse_client_item",
    "retrieved_item",
    "transcription_events",
    "truncate_item",
    "user_audio_item",
]


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
    base = {
        "id": item.get("id") or new_id,
        "object": "realtime.item",
        "type": kind,
        "status": "completed",
    }
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
                raise ParamError(
                    "invalid_type", f"Invalid type for '{path}': expected an object.", path
                )
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
                    raise ParamError(
                        "invalid_value", E.INVALID_AUDIO_MESSAGE, f"{path}.audio"
                    ) from None
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


def create_item(
    conv: Conversation, event: dict[str, Any], new_id: str, bytes_per_ms: int
) -> tuple[ItemRecord, str | None]:
    """Validate and insert the item of a ``conversation.item.create``; return it and its predecessor."""
    rec = parse_client_item(event.get("item"), new_id, bytes_per_ms)
    if conv.get(rec.id) is not None:
        raise ParamError("invalid_value", f"Item with id '{rec.id}' already exists.", "item.id")
    if rec.type == "function_call_output" and rec.item["call_id"] not in conv.call_ids():
        call_id = rec.item["call_id"]
        raise ParamError(
            E.CALL_ID_NOT_FOUND_CODE, E.call_id_not_found_message(call_id), "item.call_id"
        )
    prev = event.get("previous_item_id")
    try:
        return rec, conv.add(rec, prev if isinstance(prev, str) else None)
    except KeyError:
        raise ParamError(
            E.ITEM_NOT_FOUND_CODE, E.item_not_found_message(str(prev)), "previous_item_id"
        ) from None


def find_item(conv: Conversation, event: dict[str, Any]) -> ItemRecord:
    item_id = event.get("item_id")
    if not isinstance(item_id, str):
        raise _missing("item_id")
    rec = conv.get(item_id)
    if rec is None:
        raise ParamError(E.ITEM_NOT_FOUND_CODE, E.item_not_found_message(item_id), "item_id")
    return rec


def cut_words(text: str, fraction: float) -> str:
    """The words of ``text`` heard within ``fraction`` of its audio (a word cut in half is dropped)."""
    n = math.floor(len(text) * min(1.0, max(0.0, fraction)))
    if n >= len(text):
        return text
    if not text[n].isspace():
        head = text[:n]
        n = head.rfind(" ") if " " in head else 0
    return text[:n].rstrip()


def truncate_item(
    conv: Conversation, event: dict[str, Any], *, too_long_code: str, not_assistant_code: str
) -> ItemRecord:
    """Apply a ``conversation.item.truncate`` (``audio_end_ms`` is inclusive) or raise its error."""
    for key in ("item_id", "content_index", "audio_end_ms"):
        if key not in event:
            raise _missing(key)
    end = event["audio_end_ms"]
    if isinstance(end, bool) or not isinstance(end, int) or end < 0:
        raise ParamError(
            "invalid_value",
            "Invalid 'audio_end_ms': expected a non-negative integer.",
            "audio_end_ms",
        )
    rec = find_item(conv, event)
    if not rec.is_assistant_audio:
        raise ParamError(not_assistant_code, E.TRUNCATE_NOT_ASSISTANT_MESSAGE, "item_id")
    if event["content_index"] != 0:
        raise ParamError(
            "invalid_value",
            "Invalid 'content_index': the item has one audio part (0).",
            "content_index",
        )
    have = rec.audio_ms
    if end > have:
        raise ParamError(
            too_long_code, E.truncate_too_long_message(math.floor(have), end), "audio_end_ms"
        )
    keep = cut_words(rec.transcript, end / have if have > 0 else 1.0)
    rec.truncated_ms = end
    rec.transcript = keep
    for part in rec.item.get("content", []):
        if part.get("type") == "output_audio":
            part["transcript"] = keep
    return rec


def retrieved_item(rec: ItemRecord) -> dict[str, Any]:
    """The item as ``conversation.item.retrieved`` shows it: with its (possibly truncated) audio."""
    item = copy.deepcopy(rec.item)
    audio = bytes(rec.audio[: round(rec.audio_ms * rec.bytes_per_ms)])
    for part in item.get("content", []):
        if part.get("type") in ("input_audio", "output_audio"):
            part["audio"] = base64.b64encode(audio).decode("ascii")
    return item


def user_audio_item(item_id: str, audio: bytes, bytes_per_ms: int) -> ItemRecord:
    """A committed user turn (captured shape: input_audio with a null transcript)."""
    item = {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    return ItemRecord(item=item, audio=bytearray(audio), bytes_per_ms=bytes_per_ms)


def transcription_events(rec: ItemRecord, model: str, text: str) -> list[dict[str, Any]]:
    """Input transcription of a user item (whisper-1 does not stream deltas); stores the text."""
    ids = {"item_id": rec.id, "content_index": 0}
    out: list[dict[str, Any]] = []
    if model != "whisper-1" and text:
        out.append(
            {"type": "conversation.item.input_audio_transcription.delta", **ids, "delta": text}
        )
    rec.item["content"][0]["transcript"] = text
    usage = transcription_usage(model, rec.audio_ms, text)
    out.append(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            **ids,
            "transcript": text,
            "usage": usage,
        }
    )
    return out
