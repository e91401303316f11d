"""Realtime GA protocol core: builders validate against the openai SDK models, parser records.

Every builder's output goes through ``tests.openai_schema.validate_client_event`` (GA model of its
type, strict, no unknown field anywhere); every server payload used here goes through
``validate_server_event`` first, so the parse tests run on realistic GA frames.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.config import Profile
from fsbridge.realtime.protocol import (
    AudioDelta,
    AudioDone,
    Error,
    FunctionCall,
    InputCommitted,
    InputTranscript,
    ItemTruncated,
    OtherEvent,
    RealtimeProtocolError,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionMismatch,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TimeoutTriggered,
    TranscriptDone,
    check_session,
    function_call_output,
    input_audio_append,
    input_audio_commit,
    item_truncate,
    message_item,
    parse_server_event,
    response_cancel,
    response_create,
    session_update,
    text_item,
)
from tests.openai_schema import validate_client_event, validate_server_event

TOOL = {
    "type": "function",
    "name": "transfer_call",
    "description": "Transfer the caller to a department.",
    "parameters": {
        "type": "object",
        "properties": {"department": {"type": "string", "enum": ["sales", "support"]}},
        "required": ["department"],
    },
}

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "server_vad_idle": {
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.7,
            "prefix_padding_ms": 200,
            "silence_duration_ms": 600,
            "idle_timeout_ms": 8000,
            "create_response": True,
            "interrupt_response": False,
        }
    },
    "semantic": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}},
    "no_vad": {"turn_detection": {"type": "none"}},
    "transcribed": {
        "transcription": {"model": "gpt-4o-transcribe", "language": "tr", "prompt": "Türkçe"},
        "noise_reduction": "far_field",
        "voice": "cedar",
        "speed": 1.2,
        "instructions": "Kısa cevap ver.",
    },
    "transcribed_model_only": {"transcription": {}, "noise_reduction": "near_field"},
}

BETA_KEYS = {
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "modalities",
    "temperature",
    "max_response_output_tokens",
}


def all_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in all_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in all_keys(v)}
    return set()


def all_values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in all_values(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in all_values(v)]
    return [obj]


# --------------------------------------------------------------------------- session.update


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("tools", [None, [TOOL]])
def test_session_update_is_valid_ga(name: str, tools: list[dict] | None) -> None:
    event = session_update(Profile.model_validate(PROFILES[name]), tools=tools)
    validate_client_event(event)
    session = event["session"]
    assert session["type"] == "realtime"
    assert "model" not in session  # the model is in the URL
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ("tools" in session) == (tools is not None)
    if tools:
        assert session["tools"] == [TOOL]


@pytest.mark.parametrize("name", PROFILES)
def test_session_update_never_has_beta_shape(name: str) -> None:
    event = session_update(Profile.model_validate(PROFILES[name]), tools=[TOOL])
    session = event["session"]
    assert not (all_keys(event) & BETA_KEYS)
    assert not ({"voice", "turn_detection", "speed"} & set(session))  # GA nests these in audio
    assert not {"pcm16", "g711_ulaw", "g711_alaw"} & {
        v for v in all_values(event) if isinstance(v, str)
    }


def test_session_update_maps_the_profile() -> None:
    p = Profile.model_validate(PROFILES["transcribed"])
    s = session_update(p)["session"]
    assert s["instructions"] == "Kısa cevap ver."
    assert s["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "cedar",
        "speed": 1.2,
    }
    assert s["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-transcribe",
        "language": "tr",
        "prompt": "Türkçe",
    }
    assert s["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    td = s["audio"]["input"]["turn_detection"]
    assert td == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


def test_session_update_turn_detection_variants() -> None:
    def td(name: str) -> Any:
        return session_update(Profile.model_validate(PROFILES[name]))["session"]["audio"]["input"][
            "turn_detection"
        ]

    assert td("server_vad_idle") == {
        "type": "server_vad",
        "threshold": 0.7,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 600,
        "idle_timeout_ms": 8000,
        "create_response": True,
        "interrupt_response": False,
    }
    assert td("semantic") == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": True,
    }
    assert td("no_vad") is None


def test_session_update_off_features_are_explicit_nulls() -> None:
    s = session_update(Profile())["session"]["audio"]["input"]
    assert s["transcription"] is None and s["noise_reduction"] is None
    s = session_update(Profile.model_validate(PROFILES["transcribed_model_only"]))["session"]
    assert s["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert s["audio"]["input"]["noise_reduction"] == {"type": "near_field"}


@settings(max_examples=40)
@given(
    instructions=st.text(max_size=200),
    speed=st.floats(min_value=0.25, max_value=1.5),
    threshold=st.floats(min_value=0.0, max_value=1.0),
    silence=st.integers(min_value=0, max_value=5000),
)
def test_session_update_valid_for_any_profile_values(
    instructions: str, speed: float, threshold: float, silence: int
) -> None:
    p = Profile.model_validate(
        {
            "instructions": instructions,
            "speed": speed,
            "turn_detection": {
                "type": "server_vad",
                "threshold": threshold,
                "silence_duration_ms": silence,
            },
        }
    )
    validate_client_event(session_update(p))


# --------------------------------------------------------------------------- other builders


def test_input_audio_append() -> None:
    pcm = bytes(range(256)) * 3
    event = input_audio_append(pcm)
    validate_client_event(event)
    assert event["type"] == "input_audio_buffer.append"
    assert base64.b64decode(event["audio"]) == pcm
    assert input_audio_append(memoryview(pcm))["audio"] == event["audio"]


def test_input_audio_append_refuses_partial_samples_and_nothing() -> None:
    with pytest.raises(ValueError, match="whole int16 samples"):
        input_audio_append(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="0 bytes"):
        input_audio_append(b"")


def test_simple_client_events() -> None:
    for event, expected in [
        (input_audio_commit(), {"type": "input_audio_buffer.commit"}),
        (response_create(), {"type": "response.create"}),
        (
            response_create("Greet the caller."),
            {"type": "response.create", "response": {"instructions": "Greet the caller."}},
        ),
        (response_cancel(), {"type": "response.cancel"}),
        (
            item_truncate("item_9", 1500),
            {
                "type": "conversation.item.truncate",
                "item_id": "item_9",
                "content_index": 0,
                "audio_end_ms": 1500,
            },
        ),
        (
            text_item("user", "Merhaba"),
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Merhaba"}],
                },
            },
        ),
        (
            function_call_output("call_1", '{"ok":true}'),
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": "call_1",
                    "output": '{"ok":true}',
                },
            },
        ),
    ]:
        assert event == expected
        validate_client_event(event)
    validate_client_event(text_item("system", "The caller is on a mobile phone."))


def test_response_create_with_metadata() -> None:
    event = response_create(metadata={"fsbridge": "goodbye"})
    assert event == {"type": "response.create", "response": {"metadata": {"fsbridge": "goodbye"}}}
    validate_client_event(event)
    both = response_create("Say goodbye.", metadata={"fsbridge": "goodbye"})
    assert both["response"] == {"instructions": "Say goodbye.", "metadata": {"fsbridge": "goodbye"}}
    validate_client_event(both)
    with pytest.raises(ValueError, match="16 string"):
        response_create(metadata={str(i): "x" for i in range(17)})
    with pytest.raises(ValueError, match="16 string"):
        response_create(metadata={"n": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("role", ["user", "system", "assistant"])
def test_message_item_for_each_role(role: str) -> None:
    event = message_item(role, "Hello there")  # type: ignore[arg-type]
    validate_client_event(event)
    part = event["item"]["content"][0]
    assert event["item"]["role"] == role
    assert part == {
        "type": "output_text" if role == "assistant" else "input_text",
        "text": "Hello there",
    }
    with pytest.raises(ValueError, match="'assistant'"):
        message_item("tool", "x")  # type: ignore[arg-type]


def test_builder_argument_errors() -> None:
    with pytest.raises(ValueError, match="audio_end_ms"):
        item_truncate("item_1", -1)
    with pytest.raises(ValueError, match="audio_end_ms"):
        item_truncate("item_1", 12.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="item_id"):
        item_truncate("", 10)
    with pytest.raises(ValueError, match="'assistant'"):
        text_item("assistant", "hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="call_id"):
        function_call_output("", "x")


# --------------------------------------------------------------------------- check_session

ECHOED_SESSION: dict[str, Any] = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_C9GpDXQ8cM5eOAnLGe2Bv",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "You are a helpful voice assistant on a phone call. Keep answers short.",
    "tools": [],
    "tool_choice": "auto",
    "max_output_tokens": "inf",
    "tracing": None,
    "truncation": "auto",
    "prompt": None,
    "expires_at": 1764569731,
    "include": None,
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": None,
            "noise_reduction": None,
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 200,
                "idle_timeout_ms": None,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0},
    },
}


def test_check_session_accepts_pcm24k_both_ways() -> None:
    check_session(ECHOED_SESSION)


@pytest.mark.parametrize(
    ("side", "fmt"),
    [
        ("output", {"type": "audio/pcmu"}),
        ("input", {"type": "audio/pcma"}),
        ("input", {"type": "audio/pcm", "rate": 16000}),
        ("output", {"type": "audio/pcm"}),
        ("output", "pcm16"),
        ("input", None),
    ],
)
def test_check_session_refuses_changed_formats(side: str, fmt: Any) -> None:
    session = copy.deepcopy(ECHOED_SESSION)
    session["audio"][side]["format"] = fmt
    with pytest.raises(SessionMismatch, match=rf"audio\.{side}\.format .*audio/pcm.*24000"):
        check_session(session)


def test_check_session_refuses_beta_and_odd_sessions() -> None:
    beta = {"modalities": ["audio", "text"], "input_audio_format": "pcm16", "voice": "alloy"}
    with pytest.raises(SessionMismatch, match="beta"):
        check_session(beta)
    with pytest.raises(SessionMismatch, match="'transcription'"):
        check_session({**ECHOED_SESSION, "type": "transcription"})
    with pytest.raises(SessionMismatch, match=r"audio\.input\.format"):
        check_session({k: v for k, v in ECHOED_SESSION.items() if k != "audio"})
    with pytest.raises(SessionMismatch, match="not an object"):
        check_session(["realtime"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parse_server_event

AUDIO = bytes(range(200)) + b"\x07"  # odd length on purpose: deltas are not sample aligned
IDS = {"response_id": "resp_CDj6x3TpyHC2Oz0QpaIwB", "item_id": "item_CDj6xLAxpYcfNKsDP5ajU"}
PART = {**IDS, "output_index": 0, "content_index": 0}
USAGE = {
    "total_tokens": 320,
    "input_tokens": 132,
    "output_tokens": 188,
    "input_token_details": {
        "text_tokens": 59,
        "audio_tokens": 73,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 64, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 41, "audio_tokens": 147},
}


def _response(status: str, details: Any = None, usage: Any = None) -> dict[str, Any]:
    return {
        "object": "realtime.response",
        "id": IDS["response_id"],
        "status": status,
        "status_details": details,
        "output": [],
        "conversation_id": "conv_CDj6wDqbCcFqJm0Hv27ww",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
        "usage": usage,
        "metadata": None,
    }


CASES: list[tuple[dict[str, Any], Any]] = [
    (
        {"type": "session.created", "event_id": "event_1", "session": ECHOED_SESSION},
        SessionCreated(ECHOED_SESSION),
    ),
    (
        {"type": "session.updated", "event_id": "event_2", "session": ECHOED_SESSION},
        SessionUpdated(ECHOED_SESSION),
    ),
    (
        {
            "type": "input_audio_buffer.speech_started",
            "event_id": "event_3",
            "audio_start_ms": 1260,
            "item_id": "item_CDj6wu9DkbWLm6CYtl3cS",
        },
        SpeechStarted(1260, "item_CDj6wu9DkbWLm6CYtl3cS"),
    ),
    (
        {
            "type": "input_audio_buffer.speech_stopped",
            "event_id": "event_4",
            "audio_end_ms": 2480,
            "item_id": "item_CDj6wu9DkbWLm6CYtl3cS",
        },
        SpeechStopped(2480, "item_CDj6wu9DkbWLm6CYtl3cS"),
    ),
    (
        {
            "type": "input_audio_buffer.committed",
            "event_id": "event_5",
            "previous_item_id": None,
            "item_id": "item_CDj6wu9DkbWLm6CYtl3cS",
        },
        InputCommitted("item_CDj6wu9DkbWLm6CYtl3cS"),
    ),
    (
        {
            "type": "response.created",
            "event_id": "event_6",
            "response": _response("in_progress"),
        },
        ResponseCreated(IDS["response_id"]),
    ),
    (
        {
            "type": "response.output_audio.delta",
            "event_id": "event_7",
            **PART,
            "delta": base64.b64encode(AUDIO).decode(),
        },
        AudioDelta(IDS["response_id"], IDS["item_id"], AUDIO),
    ),
    (
        {"type": "response.output_audio.done", "event_id": "event_8", **PART},
        AudioDone(IDS["response_id"], IDS["item_id"]),
    ),
    (
        {
            "type": "response.output_audio_transcript.done",
            "event_id": "event_9",
            **PART,
            "transcript": "Hello! How can I help you today?",
        },
        TranscriptDone(IDS["response_id"], IDS["item_id"], "Hello! How can I help you today?"),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": "event_10",
            "item_id": "item_CDj6wu9DkbWLm6CYtl3cS",
            "content_index": 0,
            "transcript": "Merhaba, siparişim nerede?",
            "usage": {"type": "duration", "seconds": 2.4},
        },
        InputTranscript(
            "item_CDj6wu9DkbWLm6CYtl3cS",
            "Merhaba, siparişim nerede?",
            {"type": "duration", "seconds": 2.4},
        ),
    ),
    (
        # The completed function_call item is where a tool runs (one event per call_id).
        {
            "type": "response.output_item.done",
            "event_id": "event_11",
            "response_id": IDS["response_id"],
            "output_index": 1,
            "item": {
                "id": IDS["item_id"],
                "object": "realtime.item",
                "type": "function_call",
                "status": "completed",
                "call_id": "call_Qf6Hn0mG4bVx9F2s",
                "name": "transfer_call",
                "arguments": '{"department":"sales"}',
            },
        },
        FunctionCall(
            IDS["response_id"],
            IDS["item_id"],
            "call_Qf6Hn0mG4bVx9F2s",
            "transfer_call",
            '{"department":"sales"}',
        ),
    ),
    (
        {
            "type": "conversation.item.truncated",
            "event_id": "event_12",
            "item_id": IDS["item_id"],
            "content_index": 0,
            "audio_end_ms": 1500,
        },
        ItemTruncated(IDS["item_id"], 1500),
    ),
    (
        {
            "type": "response.done",
            "event_id": "event_13",
            "response": _response("completed", None, USAGE),
        },
        ResponseDone(IDS["response_id"], "completed", None, USAGE, None),
    ),
    (
        {
            "type": "response.done",
            "event_id": "event_14",
            "response": _response(
                "cancelled", {"type": "cancelled", "reason": "turn_detected"}, USAGE
            ),
        },
        ResponseDone(IDS["response_id"], "cancelled", "turn_detected", USAGE, None),
    ),
    (
        {
            "type": "response.done",
            "event_id": "event_15",
            "response": _response(
                "failed",
                {
                    "type": "failed",
                    "error": {"type": "server_error", "code": "rate_limit_exceeded"},
                },
            ),
        },
        ResponseDone(
            IDS["response_id"],
            "failed",
            None,
            None,
            {"type": "server_error", "code": "rate_limit_exceeded"},
        ),
    ),
    (
        {
            "type": "error",
            "event_id": "event_16",
            "error": {
                "type": "invalid_request_error",
                "code": "session_expired",
                "message": "Your session hit the maximum duration of 60 minutes.",
                "param": None,
                "event_id": None,
            },
        },
        Error(
            "session_expired",
            "Your session hit the maximum duration of 60 minutes.",
            "invalid_request_error",
            None,
            None,
        ),
    ),
    (
        {
            "type": "error",
            "event_id": "event_17",
            "error": {
                "type": "invalid_request_error",
                "code": "unknown_parameter",
                "message": "Unknown parameter: 'session.input_audio_format'.",
                "param": "session.input_audio_format",
                "event_id": "evt_client_3",
            },
        },
        Error(
            "unknown_parameter",
            "Unknown parameter: 'session.input_audio_format'.",
            "invalid_request_error",
            "session.input_audio_format",
            "evt_client_3",
        ),
    ),
    (
        {
            "type": "input_audio_buffer.timeout_triggered",
            "event_id": "event_18",
            "audio_start_ms": 4200,
            "audio_end_ms": 9200,
            "item_id": "item_CDj6wu9DkbWLm6CYtl3cT",
        },
        TimeoutTriggered(4200, 9200, "item_CDj6wu9DkbWLm6CYtl3cT"),
    ),
    (
        {
            "type": "response.created",
            "event_id": "event_19",
            "response": {**_response("in_progress"), "metadata": {"fsbridge": "goodbye"}},
        },
        ResponseCreated(IDS["response_id"], {"fsbridge": "goodbye"}),
    ),
]

OTHER: list[dict[str, Any]] = [
    {
        "type": "rate_limits.updated",
        "event_id": "event_20",
        "rate_limits": [
            {"name": "tokens", "limit": 40000, "remaining": 39500, "reset_seconds": 0.75}
        ],
    },
    {
        "type": "response.output_audio_transcript.delta",
        "event_id": "event_21",
        **PART,
        "delta": "Hel",
        "obfuscation": "Zq3uX8",
    },
    {
        # The arguments' done event: deliberately not a FunctionCall (no double runs).
        "type": "response.function_call_arguments.done",
        "event_id": "event_22",
        **IDS,
        "output_index": 1,
        "call_id": "call_Qf6Hn0mG4bVx9F2s",
        "name": "transfer_call",
        "arguments": '{"department":"sales"}',
    },
    {
        # A completed assistant message item is not a function call either.
        "type": "response.output_item.done",
        "event_id": "event_24",
        "response_id": IDS["response_id"],
        "output_index": 0,
        "item": {
            "id": IDS["item_id"],
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "Hello!"}],
        },
    },
    {"type": "input_audio_buffer.cleared", "event_id": "event_23"},
]


@pytest.mark.parametrize(("payload", "record"), CASES, ids=[c[0]["type"] for c in CASES])
def test_parse_records(payload: dict[str, Any], record: Any) -> None:
    validate_server_event(payload)  # the payload itself is a faithful GA frame
    assert parse_server_event(payload) == record


@pytest.mark.parametrize("payload", OTHER, ids=[o["type"] for o in OTHER])
def test_other_events_pass_through(payload: dict[str, Any]) -> None:
    validate_server_event(payload)
    event = parse_server_event(payload)
    assert event == OtherEvent(payload["type"], payload)


def test_beta_event_names_are_not_understood() -> None:
    beta = {"type": "response.audio.delta", "event_id": "e", **PART, "delta": "AAAA"}
    assert isinstance(parse_server_event(beta), OtherEvent)


def test_records_are_frozen_and_reprs_stay_small() -> None:
    delta = parse_server_event(CASES[6][0])
    assert isinstance(delta, AudioDelta)
    with pytest.raises(AttributeError):
        delta.audio = b""  # type: ignore[misc]
    assert "audio" not in repr(delta)


def _without(payload: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _with(payload: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


MALFORMED = [
    (_with(CASES[6][0], "not base64!", "delta"), "response.output_audio.delta", "base64"),
    (_with(CASES[6][0], "AAE", "delta"), "response.output_audio.delta", "base64"),
    (_with(CASES[6][0], "şş==", "delta"), "response.output_audio.delta", "base64"),
    (_without(CASES[6][0], "item_id"), "response.output_audio.delta", "'item_id'"),
    (_with(CASES[2][0], "1260", "audio_start_ms"), "input_audio_buffer.speech_started", "integer"),
    (_with(CASES[2][0], True, "audio_start_ms"), "input_audio_buffer.speech_started", "integer"),
    (_without(CASES[5][0], "response"), "response.created", "'response'"),
    (_without(CASES[12][0], "response", "id"), "response.done", "'id'"),
    (_with(CASES[12][0], "x", "response", "usage"), "response.done", "'usage'"),
    (_with(CASES[13][0], 5, "response", "status_details", "reason"), "response.done", "reason"),
    (_without(CASES[15][0], "error", "message"), "error", "'message'"),
    (_with(CASES[15][0], "boom", "error"), "error", "'error'"),
    (_with(CASES[0][0], [], "session"), "session.created", "'session'"),
    (_without(CASES[10][0], "item", "name"), "response.output_item.done", "'name'"),
    (_without(CASES[10][0], "item", "call_id"), "response.output_item.done", "'call_id'"),
    (_with(CASES[10][0], "x", "item"), "response.output_item.done", "'item'"),
    (
        _without(CASES[17][0], "audio_end_ms"),
        "input_audio_buffer.timeout_triggered",
        "'audio_end_ms'",
    ),
    (_with(CASES[18][0], "x", "response", "metadata"), "response.created", "'metadata'"),
]


@pytest.mark.parametrize(("payload", "etype", "what"), MALFORMED)
def test_malformed_events_name_their_type(payload: dict[str, Any], etype: str, what: str) -> None:
    with pytest.raises(RealtimeProtocolError, match=what) as info:
        parse_server_event(payload)
    assert info.value.event_type == etype
    assert etype in str(info.value)


def test_not_an_event_at_all() -> None:
    with pytest.raises(RealtimeProtocolError, match="JSON object"):
        parse_server_event([1, 2])  # type: ignore[arg-type]
    with pytest.raises(RealtimeProtocolError, match="'type'"):
        parse_server_event({"event_id": "e"})
    with pytest.raises(RealtimeProtocolError, match="'type'"):
        parse_server_event({"type": 7})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=5,
)
KNOWN = [c[0]["type"] for c in CASES]
FIELDS = sorted({k for c in CASES for k in all_keys(c[0])})


@settings(max_examples=150)
@given(
    etype=st.sampled_from([*KNOWN, "response.output_item.added", "x"]),
    body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
)
def test_fuzz_parse_never_fails_any_other_way(etype: str, body: dict[str, Any]) -> None:
    try:
        event = parse_server_event({**body, "type": etype})
    except RealtimeProtocolError as exc:
        assert exc.event_type == etype
    else:
        assert event is not None


@settings(max_examples=100)
@given(st.sampled_from(range(len(CASES))), st.data())
def test_fuzz_mutated_real_events(index: int, data: st.DataObject) -> None:
    payload = copy.deepcopy(CASES[index][0])
    key = data.draw(st.sampled_from(sorted(payload)))
    if key != "type":
        payload[key] = data.draw(json_values)
    try:
        parse_server_event(payload)
    except RealtimeProtocolError as exc:
        assert exc.event_type == payload["type"]


@given(st.binary(max_size=3000))
def test_audio_delta_round_trip(audio: bytes) -> None:
    payload = {**CASES[6][0], "delta": base64.b64encode(audio).decode()}
    event = parse_server_event(payload)
    assert isinstance(event, AudioDelta) and event.audio == audio


def test_an_odd_transcription_usage_does_not_cost_the_transcript() -> None:
    ev = parse_server_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": "e1",
            "item_id": "item_1",
            "content_index": 0,
            "transcript": "Hello",
            "usage": "n/a",
        }
    )
    assert ev == InputTranscript("item_1", "Hello", None)
