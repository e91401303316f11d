"""The OpenAI Realtime GA dialect without I/O: client event builders and the session check.

Only the GA dialect exists here: the beta one (``OpenAI-Beta: realtime=v1``, flat sessions with
``input_audio_format``, ``response.audio.delta``) is shut down and the server closes such sessions
with code 4000, so nothing in this module can produce it. Builders return plain dicts ready for
``json.dumps``; :func:`check_session` rejects an echoed session fsbridge cannot play.

The receiving half (typed server-event records and :func:`parse_server_event`) lives in
:mod:`fsbridge.realtime.events` and the exceptions in :mod:`fsbridge.realtime.errors`: the halves
share nothing but those, and the split keeps each module small. This module re-exports both, so
``from fsbridge.realtime import protocol as rtp`` still gives ``rtp.AudioDelta``,
``rtp.parse_server_event`` and ``rtp.RealtimeProtocolError``. See ``docs/internals.md`` and the
reference in ``/work/shared/reference/openai-realtime.md`` (sections 3-5, 9).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

from fsbridge.config import Profile, SemanticVad, ServerVad
from fsbridge.realtime.errors import RealtimeError, RealtimeProtocolError, SessionMismatch
from fsbridge.realtime.events import (
    AudioDelta,
    AudioDone,
    Error,
    FunctionCall,
    InputCommitted,
    InputTranscript,
    ItemTruncated,
    OtherEvent,
    ResponseCreated,
    ResponseDone,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TimeoutTriggered,
    TranscriptDone,
    parse_server_event,
)

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
