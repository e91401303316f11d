"""The OpenAI Realtime GA dialect without I/O: client event builders and a server event parser.

Only the GA dialect exists here: the beta one (``OpenAI-Beta: realtime=v1``, flat sessions with
``input_audio_format``, ``response.audio.delta``) is shut down and the server closes such sessions
with code 4000, so nothing in this module can produce it. Builders return plain dicts ready for
``json.dumps``; :func:`parse_server_event` turns the few server events the call acts on into small
frozen records and everything else into :class:`OtherEvent`. Malformed events of a known type
raise :class:`RealtimeProtocolError` naming the type, so the connection can drop and count them
instead of crashing the call. See ``docs/internals.md`` and the reference in
``/work/shared/reference/openai-realtime.md`` (sections 3-5, 9).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from fsbridge.config import Profile, SemanticVad, ServerVad

__all__ = [
    "PCM_24K",
    "AudioDelta",
    "AudioDone",
    "Error",
    "FunctionCall",
    "InputCommitted",
    "InputTranscript",
    "ItemTruncated",
    "OtherEvent",
    "RealtimeError",
    "RealtimeProtocolError",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "SessionCreated",
    "SessionMismatch",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TimeoutTriggered",
    "TranscriptDone",
    "check_session",
    "function_call_output",
    "input_audio_append",
    "input_audio_commit",
    "item_truncate",
    "message_item",
    "parse_server_event",
    "response_cancel",
    "response_create",
    "session_update",
    "text_item",
]

PCM_24K: Mapping[str, Any] = {"type": "audio/pcm", "rate": 24000}


class RealtimeError(Exception):
    """Base of everything the Realtime layer raises."""


class RealtimeProtocolError(RealtimeError):
    """A server event of a known type lacks a field or carries a bad value (e.g. base64)."""

    def __init__(self, event_type: str, problem: str) -> None:
        super().__init__(f"malformed {event_type!r} event: {problem}")
        self.event_type = event_type


class SessionMismatch(RealtimeError):
    """The session the server echoed is not the one fsbridge needs (audio/pcm 24 kHz, GA)."""


# --------------------------------------------------------------------------- client events


def _pcm24k() -> dict[str, Any]:
    return dict(PCM_24K)


def _turn_detection(profile: Profile) -> dict[str, Any] | None:
    td = profile.turn_detection
    if isinstance(td, ServerVad):
        out: dict[str, Any] = {
            "type": "server_vad",
            "threshold": td.threshold,
            "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_duration_ms,
        }
        if td.idle_timeout_ms is not None:  # server default is null (off)
            out["idle_timeout_ms"] = td.idle_timeout_ms
        out["create_response"] = td.create_response
        out["interrupt_response"] = td.interrupt_response
        return out
    if isinstance(td, SemanticVad):
        return {
            "type": "semantic_vad",
            "eagerness": td.eagerness,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    return None  # type "none": the client commits and asks for responses itself


def session_update(profile: Profile, *, tools: list[dict[str, Any]] | None = None) -> dict:
    """The GA ``session.update`` for a profile. ``model`` is not sent: it is fixed by the URL.

    Transcription and noise reduction are sent as explicit ``null`` when off, so the session
    state never depends on server defaults.
    """
    transcription: dict[str, Any] | None = None
    if profile.transcription is not None:
        t = profile.transcription
        transcription = {"model": t.model}
        if t.language:
            transcription["language"] = t.language
        if t.prompt:
            transcription["prompt"] = t.prompt
    noise = {"type": profile.noise_reduction} if profile.noise_reduction else None
    session: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": profile.instructions,
        "audio": {
            "input": {
                "format": _pcm24k(),
                "turn_detection": _turn_detection(profile),
                "transcription": transcription,
                "noise_reduction": noise,
            },
            "output": {"format": _pcm24k(), "voice": profile.voice, "speed": profile.speed},
        },
    }
    if tools is not None:
        session["tools"] = list(tools)
    return {"type": "session.update", "session": session}


def input_audio_append(pcm24k: bytes) -> dict:
    """Append whole 24 kHz int16 samples (the server's handling of odd lengths is unknown)."""
    if not pcm24k:
        raise ValueError("input_audio_append needs audio, got 0 bytes")
    if len(pcm24k) & 1:
        raise ValueError(f"input audio must be whole int16 samples, got {len(pcm24k)} bytes")
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24k).decode("ascii")}


def input_audio_commit() -> dict:
    return {"type": "input_audio_buffer.commit"}


def response_create(
    instructions: str | None = None, *, metadata: Mapping[str, str] | None = None
) -> dict:
    """Ask for a response; ``instructions`` override the session's for this response only.

    ``metadata`` (at most 16 string pairs) is echoed in ``response.created``: it is how the call
    recognises the response it asked for (a goodbye, a prompt) among those VAD starts.
    """
    if instructions is None and metadata is None:
        return {"type": "response.create"}
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions
    if metadata is not None:
        if len(metadata) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ValueError("response metadata is at most 16 string keys with string values")
        response["metadata"] = dict(metadata)
    return {"type": "response.create", "response": response}


def response_cancel() -> dict:
    return {"type": "response.cancel"}


def item_truncate(item_id: str, audio_end_ms: int) -> dict:
    """Cut an assistant audio item to what the caller heard (content part 0)."""
    if not item_id:
        raise ValueError("item_truncate needs an item_id")
    if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
        raise ValueError(f"audio_end_ms must be a non-negative int, got {audio_end_ms!r}")
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }


def text_item(role: Literal["user", "system"], text: str) -> dict:
    """A text message item (context re-seeding, greetings, hints)."""
    if role not in ("user", "system"):
        raise ValueError(f"text items are 'user' or 'system', not {role!r}")
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": "input_text", "text": text}],
        },
    }


def message_item(role: Literal["user", "system", "assistant"], text: str) -> dict:
    """A text message of any role, for re-seeding a new session with the conversation so far.

    Assistant text goes in as ``output_text`` (GA accepts assistant *text* items, never audio).
    """
    if role not in ("user", "system", "assistant"):
        raise ValueError(f"message items are 'user', 'system' or 'assistant', not {role!r}")
    kind = "output_text" if role == "assistant" else "input_text"
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
    }


def function_call_output(call_id: str, output: str) -> dict:
    """The result of a tool call; send ``response.create`` after it (it does not trigger one)."""
    if not call_id:
        raise ValueError("function_call_output needs a call_id")
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def check_session(session: Mapping[str, Any]) -> None:
    """Raise :class:`SessionMismatch` unless the echoed session is GA audio/pcm 24 kHz both ways.

    Reports exist of servers answering with other formats than requested; audio in an
    unexpected format would play as noise, so fail loudly instead.
    """
    if not isinstance(session, Mapping):
        raise SessionMismatch(f"the server sent a session that is not an object: {session!r}")
    beta = [k for k in ("input_audio_format", "output_audio_format", "modalities") if k in session]
    if beta:
        raise SessionMismatch(
            f"the server answered with a beta-dialect session ({', '.join(beta)}); "
            "fsbridge speaks the GA dialect only"
        )
    if session.get("type", "realtime") != "realtime":
        raise SessionMismatch(
            f"the server's session type is {session.get('type')!r}, expected 'realtime'"
        )
    audio = session.get("audio")
    for side in ("input", "output"):
        part = audio.get(side) if isinstance(audio, Mapping) else None
        fmt = part.get("format") if isinstance(part, Mapping) else None
        if not (
            isinstance(fmt, Mapping) and fmt.get("type") == "audio/pcm" and fmt.get("rate") == 24000
        ):
            raise SessionMismatch(
                f"the server's session has audio.{side}.format = {fmt!r}, but fsbridge needs "
                "{'type': 'audio/pcm', 'rate': 24000}: the server changed the audio format"
            )


# --------------------------------------------------------------------------- server events


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
        f.text("item_id"), f.text("transcript")
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
