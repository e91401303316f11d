"""Server events of the OpenAI Realtime GA dialect without I/O: typed records and their parser.

This is the receiving half of the protocol, split from :mod:`~fsbridge.realtime.protocol` (the
sending half: client event builders and the session check) because the two share nothing but
the error classes: builders turn a :class:`~fsbridge.config.Profile` into dicts, while this side
only validates and decodes what the server sends. :func:`parse_server_event` turns the few
server events the call acts on into small frozen records and everything else into
:class:`OtherEvent`. Malformed events of a known type raise :class:`RealtimeProtocolError`
naming the type, so the connection can drop and count them instead of crashing the call.
:mod:`~fsbridge.realtime.protocol` re-exports every name here, so callers keep using
``rtp.AudioDelta`` and friends. See ``docs/internals.md`` and the reference in
``/work/shared/reference/openai-realtime.md`` (sections 4-5, 9).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from fsbridge.realtime.errors import RealtimeProtocolError

__all__ = [
    "AudioDelta",
    "AudioDone",
    "Error",
    "FunctionCall",
    "InputCommitted",
    "InputTranscript",
    "ItemTruncated",
    "OtherEvent",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "SessionCreated",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TimeoutTriggered",
    "TranscriptDone",
    "parse_server_event",
]


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session: dict


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str
    metadata: dict | None = None  # what the client's response.create carried, echoed


@dataclass(frozen=True, slots=True)
class TimeoutTriggered:
    """Server VAD's ``idle_timeout_ms`` fired: the caller said nothing after the last reply."""

    audio_start_ms: int
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    audio: bytes = field(repr=False)  # decoded; may have an odd length (use ByteCarry)


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    transcript: str
    usage: dict | None = None  # billed apart from responses; absent or odd: None, never an error


@dataclass(frozen=True, slots=True)
class FunctionCall:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str  # a JSON string, as the model wrote it


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    reason: str | None  # status_details.reason: turn_detected, client_cancelled, ...
    usage: dict | None
    error: dict | None  # status_details.error for failed responses


@dataclass(frozen=True, slots=True)
class Error:
    code: str | None
    message: str
    type: str
    param: str | None
    event_id: str | None


@dataclass(frozen=True, slots=True)
class OtherEvent:
    type: str
    raw: dict = field(repr=False)


ServerEvent: TypeAlias = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | TimeoutTriggered
    | InputCommitted
    | ResponseCreated
    | AudioDelta
    | AudioDone
    | TranscriptDone
    | InputTranscript
    | FunctionCall
    | ItemTruncated
    | ResponseDone
    | Error
    | OtherEvent
)


class _Fields:
    """Typed field access that turns a missing or mistyped field into RealtimeProtocolError."""

    __slots__ = ("obj", "type")

    def __init__(self, obj: Mapping[str, Any], event_type: str) -> None:
        self.obj = obj
        self.type = event_type

    def _bad(self, key: str, what: str) -> RealtimeProtocolError:
        val = self.obj.get(key, None)
        got = "missing" if key not in self.obj else f"{type(val).__name__}"
        return RealtimeProtocolError(self.type, f"{key!r} must be {what} ({got})")

    def text(self, key: str) -> str:
        val = self.obj.get(key)
        if not isinstance(val, str):
            raise self._bad(key, "a string")
        return val

    def opt_str(self, key: str) -> str | None:
        val = self.obj.get(key)
        if val is not None and not isinstance(val, str):
            raise self._bad(key, "a string or null")
        return val

    def integer(self, key: str) -> int:
        val = self.obj.get(key)
        if isinstance(val, bool) or not isinstance(val, int):
            raise self._bad(key, "an integer")
        return val

    def sub(self, key: str) -> _Fields:
        val = self.obj.get(key)
        if not isinstance(val, Mapping):
            raise self._bad(key, "an object")
        return _Fields(val, self.type)

    def loose_dict(self, key: str) -> dict | None:
        """An optional object whose absence or odd shape must not cost the event."""
        val = self.obj.get(key)
        return dict(val) if isinstance(val, Mapping) else None

    def opt_dict(self, key: str) -> dict | None:
        val = self.obj.get(key)
        if val is not None and not isinstance(val, Mapping):
            raise self._bad(key, "an object or null")
        return dict(val) if val is not None else None

    def b64(self, key: str) -> bytes:
        text = self.text(key)
        try:
            return binascii.a2b_base64(text, strict_mode=True)  # C speed, no regex pass
        except (binascii.Error, ValueError):
            raise RealtimeProtocolError(self.type, f"{key!r} is not valid base64") from None


def _response_done(f: _Fields) -> ResponseDone:
    r = f.sub("response")
    details = r.opt_dict("status_details") or {}
    d = _Fields(details, f.type)
    return ResponseDone(
        response_id=r.text("id"),
        status=r.text("status"),
        reason=d.opt_str("reason"),
        usage=r.opt_dict("usage"),
        error=d.opt_dict("error"),
    )


def _output_item_done(f: _Fields) -> ServerEvent:
    # A tool runs on the completed function_call item only: the arguments' own .done event for
    # the same call stays an OtherEvent, so a tool never runs twice (one event per call_id).
    item = f.sub("item")
    if item.obj.get("type") != "function_call":
        return OtherEvent(f.type, dict(f.obj))
    return FunctionCall(
        f.text("response_id"),
        item.text("id"),
        item.text("call_id"),
        item.text("name"),
        item.text("arguments"),
    )


def _error(f: _Fields) -> Error:
    e = f.sub("error")
    return Error(
        code=e.opt_str("code"),
        message=e.text("message"),
        type=e.text("type"),
        param=e.opt_str("param"),
        event_id=e.opt_str("event_id"),
    )


_PARSERS: dict[str, Callable[[_Fields], ServerEvent]] = {
    "session.created": lambda f: SessionCreated(dict(f.sub("session").obj)),
    "session.updated": lambda f: SessionUpdated(dict(f.sub("session").obj)),
    "input_audio_buffer.speech_started": lambda f: SpeechStarted(
        f.integer("audio_start_ms"), f.text("item_id")
    ),
    "input_audio_buffer.speech_stopped": lambda f: SpeechStopped(
        f.integer("audio_end_ms"), f.text("item_id")
    ),
    "input_audio_buffer.committed": lambda f: InputCommitted(f.text("item_id")),
    "input_audio_buffer.timeout_triggered": lambda f: TimeoutTriggered(
        f.integer("audio_start_ms"), f.integer("audio_end_ms"), f.text("item_id")
    ),
    "response.created": lambda f: ResponseCreated(
        f.sub("response").text("id"), f.sub("response").opt_dict("metadata")
    ),
    "response.output_audio.delta": lambda f: AudioDelta(
        f.text("response_id"), f.text("item_id"), f.b64("delta")
    ),
    "response.output_audio.done": lambda f: AudioDone(f.text("response_id"), f.text("item_id")),
    "response.output_audio_transcript.done": lambda f: TranscriptDone(
        f.text("response_id"), f.text("item_id"), f.text("transcript")
    ),
    "conversation.item.input_audio_transcription.completed": lambda f: InputTranscript(
        f.text("item_id"), f.text("transcript"), f.loose_dict("usage")
    ),
    "response.output_item.done": _output_item_done,
    "conversation.item.truncated": lambda f: ItemTruncated(
        f.text("item_id"), f.integer("audio_end_ms")
    ),
    "response.done": _response_done,
    "error": _error,
}


def parse_server_event(obj: Mapping[str, Any]) -> ServerEvent:
    """Map one decoded server event to its record; unknown types become :class:`OtherEvent`.

    Raises :class:`RealtimeProtocolError` (naming the type) for malformed events.
    """
    if not isinstance(obj, Mapping):
        raise RealtimeProtocolError(
            "<not an object>", f"expected a JSON object, got {type(obj).__name__}"
        )
    event_type = obj.get("type")
    if not isinstance(event_type, str):
        raise RealtimeProtocolError("<no type>", "'type' must be a string")
    parser = _PARSERS.get(event_type)
    if parser is None:
        return OtherEvent(event_type, obj if isinstance(obj, dict) else dict(obj))
    return parser(_Fields(obj, event_type))
