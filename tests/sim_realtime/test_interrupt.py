"""Barge-in cancels with turn_detected; truncation rules and texts."""

from __future__ import annotations

import pytest

from fsbridge.sim import rt_errors as E
from fsbridge.sim.realtime import Reply
from tests.sim_realtime.conftest import pcm_reply, silence, tone

TRANSCRIPT = "one two three four five six seven eight nine ten eleven twelve"


async def _talking(make_sim, connect, **kw):
    """A session whose first reply (3 s) is streaming slowly when the helper returns."""
    sim = await make_sim(
        replies=[Reply(audio=pcm_reply(3000), transcript=TRANSCRIPT)], delivery_speed=0.5, **kw
    )
    c = await connect(sim)
    await c.append(silence(200) + tone(600) + silence(300))
    await c.recv_until("response.output_audio.delta")
    return sim, c


async def test_speech_during_response_cancels_turn_detected(make_sim, connect) -> None:
    sim, c = await _talking(make_sim, connect)
    await c.append(tone(200))
    started = await c.recv_until("input_audio_buffer.speech_started")
    done = await c.recv_until("response.done")
    types = c.types()
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
    resp = done["response"]
    assert resp["status"] == "cancelled"
    assert resp["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    for t in (
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert t in types
    s = sim.sessions[0]
    rec = s.responses[0]
    assert rec.status == "cancelled" and rec.reason == "turn_detected"
    assistant = next(i for i in s.items if i["role"] == "assistant")
    assert assistant["audio_ms"] == pytest.approx(rec.audio_ms_sent)
    assert 0 < rec.audio_ms_sent < 3000
    # what was streamed of the transcript is what the item holds
    assert assistant["content"][0]["transcript"] == rec.transcript_sent
    assert TRANSCRIPT.startswith(rec.transcript_sent)
    # onset at 1100 ms; the 300 ms prefix stops at the end of the committed turn (800 + 200 ms)
    assert started["audio_start_ms"] == 1000


async def test_no_cancel_when_interrupt_response_false(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(1500), transcript="x")], delivery_speed=0.5)
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}
                },
            },
        }
    )
    await c.recv_until("session.updated")
    await c.append(silence(200) + tone(600) + silence(300))
    await c.recv_until("response.output_audio.delta")
    await c.append(tone(200))
    await c.recv_until("input_audio_buffer.speech_started")
    done = await c.recv_until("response.done", timeout=10)
    assert done["response"]["status"] == "completed"


async def test_truncate_beyond_audio(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(1000), transcript=TRANSCRIPT)])
    c = await connect(sim)
    await c.send({"type": "response.create"})
    done = await c.recv_until("response.done")
    item_id = done["response"]["output"][0]["id"]
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 1500,
        }
    )
    err = await c.expect_error(E.TRUNCATE_TOO_LONG_CODE)
    assert err["message"] == "Audio content of 1000ms is already shorter than 1500ms"
    assert sim.sessions[0].truncations == []
    # exactly the length is fine (inclusive)
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 1000,
        }
    )
    await c.recv_until("conversation.item.truncated")


async def test_truncate_non_assistant_item(make_sim, connect) -> None:
    sim = await make_sim()
    c = await connect(sim)
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    added = await c.recv_until("conversation.item.added")
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": added["item"]["id"],
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    err = await c.expect_error(E.TRUNCATE_NOT_ASSISTANT_CODE)
    assert err["message"] == "Only model output audio messages can be truncated"
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    assert (await c.expect_error(E.ITEM_NOT_FOUND_CODE))["param"] == "item_id"


async def test_truncate_cuts_transcript_and_audio(make_sim, connect) -> None:
    sim, c = await _talking(make_sim, connect)
    await c.append(tone(200))
    done = await c.recv_until("response.done")
    item = done["response"]["output"][0]
    rec = sim.sessions[0].responses[0]
    heard = int(rec.audio_ms_sent / 2)
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item["id"],
            "content_index": 0,
            "audio_end_ms": heard,
        }
    )
    ev = await c.recv_until("conversation.item.truncated")
    assert ev == {**ev, "item_id": item["id"], "content_index": 0, "audio_end_ms": heard}
    s = sim.sessions[0]
    t, item_id, end = s.truncations[0]
    assert (item_id, end) == (item["id"], heard) and t > 0
    stored = next(i for i in s.items if i["id"] == item["id"])
    assert stored["audio_ms"] == heard
    kept = stored["content"][0]["transcript"]
    assert len(kept) < len(rec.transcript_sent) and rec.transcript_sent.startswith(kept)
    # a second truncation measures against the shortened audio
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item["id"],
            "content_index": 0,
            "audio_end_ms": heard + 10,
        }
    )
    await c.expect_error(E.TRUNCATE_TOO_LONG_CODE)
