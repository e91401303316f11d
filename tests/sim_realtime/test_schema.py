"""The schema helper itself must fail where it should (otherwise every other check is hollow)."""

from __future__ import annotations

import pytest

from tests.openai_schema import server_event_types, validate_client_event, validate_server_event

SPEECH = {
    "type": "input_audio_buffer.speech_started",
    "event_id": "event_1",
    "audio_start_ms": 700,
    "item_id": "item_1",
}


def test_valid_server_event_passes() -> None:
    validate_server_event(SPEECH)


def test_union_map_is_complete() -> None:
    assert len(server_event_types()) == 46
    assert "response.output_audio.delta" in server_event_types()
    assert "response.audio.delta" not in server_event_types()  # beta name


@pytest.mark.parametrize(
    ("event", "needle"),
    [
        ({**SPEECH, "audio_start_ms": "700"}, "does not match"),  # strict: no str -> int
        ({k: v for k, v in SPEECH.items() if k != "item_id"}, "item_id"),
        ({**SPEECH, "extra": 1}, "extra"),
        ({"type": "response.audio.delta", "event_id": "e", "delta": ""}, "unknown GA server event"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_bad_server_events_fail(event: object, needle: str) -> None:
    with pytest.raises(AssertionError, match=needle):
        validate_server_event(event)


def test_nested_extra_fails_with_its_path() -> None:
    event = {
        "type": "session.updated",
        "event_id": "e",
        "session": {
            "type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000, "bits": 16}}},
        },
    }
    with pytest.raises(AssertionError, match=r"session\.audio\.input\.format\.bits"):
        validate_server_event(event)


def test_allow_listed_extras_pass() -> None:
    validate_server_event(
        {
            "type": "response.output_audio_transcript.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
            "obfuscation": "xyz",
        }
    )
    validate_server_event(
        {
            "type": "session.created",
            "event_id": "e",
            "session": {
                "type": "realtime",
                "id": "sess_1",
                "object": "realtime.session",
                "expires_at": 1,
            },
        }
    )
    # ...but only on the events they are listed for
    with pytest.raises(AssertionError, match="obfuscation"):
        validate_server_event({**SPEECH, "obfuscation": "x"})


def test_client_events() -> None:
    validate_client_event(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
            },
        }
    )
    with pytest.raises(AssertionError, match="does not match"):  # beta shape: no session.type
        validate_client_event({"type": "session.update", "session": {"modalities": ["audio"]}})
    with pytest.raises(AssertionError, match="input_audio_format"):
        validate_client_event(
            {
                "type": "session.update",
                "session": {"type": "realtime", "input_audio_format": "pcm16"},
            }
        )
    with pytest.raises(AssertionError, match="does not match"):  # rate must be 24000
        validate_client_event(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}},
                },
            }
        )
