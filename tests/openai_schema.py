"""Validate Realtime GA event dicts against the ``openai`` package's typed models.

The simulator and the service are written independently; this module is the third party that keeps
both honest. Every event is validated by the model of its ``type`` (built from the members of the
``RealtimeServerEvent`` / ``RealtimeClientEvent`` unions), in pydantic strict mode, and then the
validated tree is walked: the SDK models accept unknown keys (``extra="allow"``), so a beta-shaped or
misspelt field would otherwise pass silently. Any key that lands in a ``model_extra`` fails, unless it
is on the short allow-list below.

    validate_server_event(obj) -> None   # AssertionError with a clear message
    validate_client_event(obj) -> None
"""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

import pydantic
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

__all__ = ["server_event_types", "validate_client_event", "validate_server_event"]

# (event type pattern, dotted path pattern) of keys the real server sends that the SDK models lack.
SERVER_EXTRAS_ALLOWED: tuple[tuple[str, str, str], ...] = (
    # Server-only session fields seen in captured GA session.created/updated frames; the SDK types
    # the session as the *request* model, which has no id/object/expires_at.
    ("session.created", "session.id", "server-only field"),
    ("session.created", "session.object", "server-only field"),
    ("session.created", "session.expires_at", "server-only field"),
    ("session.updated", "session.id", "server-only field"),
    ("session.updated", "session.object", "server-only field"),
    ("session.updated", "session.expires_at", "server-only field"),
    # GA frames pad streamed text deltas with an undocumented random `obfuscation` string.
    ("response.output_audio_transcript.delta", "obfuscation", "undocumented padding"),
    ("response.output_text.delta", "obfuscation", "undocumented padding"),
    ("conversation.item.input_audio_transcription.delta", "obfuscation", "undocumented padding"),
)
CLIENT_EXTRAS_ALLOWED: tuple[tuple[str, str, str], ...] = ()


def _type_map(union: Any) -> dict[str, type[pydantic.BaseModel]]:
    members = typing.get_args(typing.get_args(union)[0])  # Annotated[Union[...], PropertyInfo]
    out: dict[str, type[pydantic.BaseModel]] = {}
    for cls in members:
        (literal,) = typing.get_args(cls.model_fields["type"].annotation)
        out[literal] = cls
    return out


@cache
def _server_types() -> dict[str, type[pydantic.BaseModel]]:
    return _type_map(RealtimeServerEvent)


@cache
def _client_types() -> dict[str, type[pydantic.BaseModel]]:
    return _type_map(RealtimeClientEvent)


def server_event_types() -> frozenset[str]:
    """Every GA server event type the installed SDK knows."""
    return frozenset(_server_types())


def _extras(obj: Any, path: str) -> Iterator[str]:
    if isinstance(obj, pydantic.BaseModel):
        for key in obj.model_extra or {}:
            yield f"{path}.{key}" if path else key
        for name in type(obj).model_fields:
            yield from _extras(getattr(obj, name), f"{path}.{name}" if path else name)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _extras(value, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _extras(value, f"{path}.{key}" if path else str(key))


def _validate(
    obj: Any, side: str, types: dict[str, type[pydantic.BaseModel]], allowed: Any
) -> None:
    if not isinstance(obj, dict):
        raise AssertionError(f"{side} event is not a JSON object: {obj!r:.200}")
    etype = obj.get("type")
    cls = types.get(etype) if isinstance(etype, str) else None
    if cls is None:
        raise AssertionError(f"unknown GA {side} event type {etype!r} (beta name?): {obj!r:.300}")
    try:
        model = cls.model_validate(obj, strict=True)
    except pydantic.ValidationError as exc:
        raise AssertionError(
            f"{side} event {etype!r} does not match {cls.__name__}:\n{exc}\nevent: {obj!r:.600}"
        ) from None
    bad = [
        p
        for p in _extras(model, "")
        if not any(
            fnmatch.fnmatchcase(etype, t) and fnmatch.fnmatchcase(p, k) for t, k, _ in allowed
        )
    ]
    if bad:
        raise AssertionError(
            f"{side} event {etype!r} has fields unknown to {cls.__name__}: {', '.join(bad)}"
            f"\nevent: {obj!r:.600}"
        )


def validate_server_event(obj: Any) -> None:
    """Fail unless ``obj`` is a GA server event with no unknown fields anywhere."""
    _validate(obj, "server", _server_types(), SERVER_EXTRAS_ALLOWED)


def validate_client_event(obj: Any) -> None:
    """Fail unless ``obj`` is a GA client event with no unknown fields anywhere."""
    _validate(obj, "client", _client_types(), CLIENT_EXTRAS_ALLOWED)
