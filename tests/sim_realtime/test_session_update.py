"""session.update: merge + full echo, and the server's rejections of beta/invalid shapes."""

from __future__ import annotations

import pytest

from fsbridge.sim import rt_errors as E
from fsbridge.sim.realtime import Reply
from tests.sim_realtime.conftest import pcm_reply

PCM = {"type": "audio/pcm", "rate": 24000}


async def test_update_is_merged_and_echoed_in_full(sim, connect) -> None:
    c = await connect(sim)
    created = c.events[0]["session"]
    await c.send(
        {
            "type": "session.update",
            "event_id": "evt_client_1",
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                    "output": {"voice": "marin"},
                },
            },
        }
    )
    ev = await c.recv_until("session.updated")
    assert ev["event_id"] != "evt_client_1"
    s = ev["session"]
    assert s["instructions"] == "Be brief."
    assert s["audio"]["output"]["voice"] == "marin"
    assert s["audio"]["output"]["format"] == PCM  # untouched fields stay
    td = s["audio"]["input"]["turn_detection"]
    assert (
        td["silence_duration_ms"] == 500
        and td["threshold"] == 0.5
        and td["create_response"] is True
    )
    assert s["id"] == created["id"] and s["expires_at"] == created["expires_at"]
    assert sim.sessions[0].config == s


async def test_turn_detection_null_and_semantic(sim, connect) -> None:
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    assert (await c.recv_until("session.updated"))["session"]["audio"]["input"][
        "turn_detection"
    ] is None
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}
                },
            },
        }
    )
    td = (await c.recv_until("session.updated"))["session"]["audio"]["input"]["turn_detection"]
    assert td == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }


@pytest.mark.invalid_client_events
@pytest.mark.parametrize(
    ("session", "code", "param", "message"),
    [
        (
            {"type": "realtime", "input_audio_format": "pcm16"},
            "unknown_parameter",
            "session.input_audio_format",
            "Unknown parameter: 'session.input_audio_format'.",
        ),
        ({"type": "realtime", "voice": "alloy"}, "unknown_parameter", "session.voice", None),
        (
            {"type": "realtime", "modalities": ["audio", "text"]},
            "unknown_parameter",
            "session.modalities",
            None,
        ),
        (
            {"type": "realtime", "temperature": 0.8},
            "unknown_parameter",
            "session.temperature",
            None,
        ),
        (
            {"instructions": "x"},
            "missing_required_parameter",
            "session.type",
            "Missing required parameter: 'session.type'.",
        ),
        (
            {"type": "realtime", "audio": {"input": {"format": "pcm16"}}},
            "invalid_type",
            "session.audio.input.format",
            "Invalid type for 'session.audio.input.format': expected an object, but got a string instead.",
        ),
        (
            {
                "type": "realtime",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
            "invalid_value",
            "session.audio.output.format.rate",
            None,
        ),
        (
            {"type": "realtime", "audio": {"input": {"format": {"type": "audio/wav"}}}},
            "invalid_value",
            "session.audio.input.format.type",
            None,
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "eagerness": "low"}}},
            },
            "unknown_parameter",
            "session.audio.input.turn_detection.eagerness",
            None,
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}},
            },
            "decimal_above_max_value",
            "session.audio.input.turn_detection.threshold",
            None,
        ),
        (
            {
                "type": "realtime",
                "audio": {
                    "input": {
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": "500"}
                    }
                },
            },
            "invalid_type",
            "session.audio.input.turn_detection.silence_duration_ms",
            None,
        ),
        (
            {"type": "realtime", "output_modalities": ["audio", "text"]},
            "invalid_value",
            "session.output_modalities",
            None,
        ),
        (
            {"type": "realtime", "max_output_tokens": 5000},
            "integer_above_max_value",
            "session.max_output_tokens",
            None,
        ),
        ({"type": "transcription"}, "invalid_value", "session.type", None),
        ({"type": "realtime", "model": "gpt-realtime-2"}, "invalid_value", "session.model", None),
    ],
)
async def test_rejected_updates(sim, connect, session, code, param, message) -> None:
    c = await connect(sim)
    before = dict(sim.sessions[0].config)
    await c.send(
        {"type": "session.update", "event_id": "evt_9", "session": session}, validate=False
    )
    err = await c.expect_error(code)
    assert err["param"] == param
    assert err["event_id"] == "evt_9"
    assert err["type"] == "invalid_request_error"
    if message is not None:
        assert err["message"] == message
    assert sim.sessions[0].config == before  # nothing half-applied


async def test_output_rate_can_be_required(make_sim, connect) -> None:
    sim = await make_sim(require_output_rate=True)
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm"}}}},
        }
    )
    err = await c.expect_error("missing_required_parameter")
    assert err["param"] == "session.audio.output.format.rate"


async def test_voice_change_refused_after_audio_output(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(200), transcript="Hi.")])
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
        }
    )
    await c.recv_until("session.updated")  # before any audio: allowed
    await c.send({"type": "response.create"})
    await c.recv_until("response.done")
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": "marin"}}},
        }
    )
    err = await c.expect_error(E.VOICE_LOCKED_CODE)
    assert err["message"] == E.VOICE_LOCKED_MESSAGE
    # the same voice again is not a change
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
        }
    )
    await c.recv_until("session.updated")


@pytest.mark.invalid_client_events
async def test_envelope_errors(sim, connect) -> None:
    c = await connect(sim)
    await c.ws.send_str("{not json")
    await c.expect_error("invalid_json")
    await c.send({"type": "response.audio.delta"}, validate=False)
    err = await c.expect_error("invalid_value")
    assert err["param"] == "type"
    await c.send({"type": "input_audio_buffer.commit", "bogus": 1}, validate=False)
    assert (await c.expect_error("unknown_parameter"))["param"] == "bogus"
    await c.ws.send_bytes(b"\x00\x01")
    await c.expect_error("invalid_value")
    await c.send({"type": "output_audio_buffer.clear"})
    await c.expect_error(E.WEBRTC_ONLY_CODE)
    # the session survives all of it
    await c.send({"type": "input_audio_buffer.clear"})
    await c.recv_until("input_audio_buffer.cleared")
