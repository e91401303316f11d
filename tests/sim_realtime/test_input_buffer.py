"""input_audio_buffer.append / commit / clear without VAD (turn_detection null)."""

from __future__ import annotations

import pytest

from fsbridge.sim import rt_errors as E
from tests.sim_realtime.conftest import b64, silence, tone

NO_VAD = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
}


async def _manual(sim, connect):
    c = await connect(sim)
    await c.send(NO_VAD)
    await c.recv_until("session.updated")
    return c


async def test_commit_empty(sim, connect) -> None:
    c = await _manual(sim, connect)
    await c.send({"type": "input_audio_buffer.commit"})
    err = await c.expect_error(E.COMMIT_EMPTY_CODE)
    assert err["message"] == E.commit_empty_message(0.0)
    assert "buffer only has 0.00ms of audio" in err["message"]
    await c.append(tone(60))
    await c.send({"type": "input_audio_buffer.commit"})
    err = await c.expect_error(E.COMMIT_EMPTY_CODE)
    assert "60.00ms" in err["message"]


@pytest.mark.invalid_client_events
async def test_bad_base64(sim, connect) -> None:
    c = await _manual(sim, connect)
    await c.send({"type": "input_audio_buffer.append", "event_id": "e1", "audio": "not base64!!"})
    err = await c.expect_error("invalid_value")
    assert err["message"] == E.INVALID_AUDIO_MESSAGE
    assert err["param"] == "audio" and err["event_id"] == "e1"
    await c.send({"type": "input_audio_buffer.append"}, validate=False)
    await c.expect_error("missing_required_parameter")
    assert len(sim.sessions[0].input_audio) == 0


async def test_append_commit_no_response_without_vad(sim, connect) -> None:
    c = await _manual(sim, connect)
    pcm = tone(500) + silence(300)
    await c.append(pcm)
    await c.send({"type": "input_audio_buffer.commit"})
    committed = await c.recv_until("input_audio_buffer.committed")
    added = await c.recv()
    done = await c.recv()
    assert [added["type"], done["type"]] == ["conversation.item.added", "conversation.item.done"]
    assert added["item"]["id"] == committed["item_id"] == done["item"]["id"]
    assert added["item"]["role"] == "user"
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert committed["previous_item_id"] is None
    s = sim.sessions[0]
    assert bytes(s.input_audio) == pcm
    assert s.items[0]["audio_ms"] == pytest.approx(800)
    # no VAD events and no automatic response
    await c.send({"type": "input_audio_buffer.clear"})
    await c.recv_until("input_audio_buffer.cleared")
    assert not any(t.startswith("input_audio_buffer.speech") for t in c.types())
    assert "response.created" not in c.types()
    # the client asks for the response
    await c.send({"type": "response.create"})
    await c.recv_until("response.done")


async def test_clear_empties_the_buffer(sim, connect) -> None:
    c = await _manual(sim, connect)
    await c.append(tone(300))
    await c.send({"type": "input_audio_buffer.clear"})
    await c.recv_until("input_audio_buffer.cleared")
    await c.send({"type": "input_audio_buffer.commit"})
    await c.expect_error(E.COMMIT_EMPTY_CODE)
    assert len(sim.sessions[0].input_audio) == 48 * 300  # the record keeps everything appended


async def test_odd_length_append_is_kept(sim, connect) -> None:
    c = await _manual(sim, connect)
    await c.send({"type": "input_audio_buffer.append", "audio": b64(b"\x01\x02\x03")})
    await c.send({"type": "input_audio_buffer.append", "audio": b64(b"\x04")})
    await c.send({"type": "input_audio_buffer.clear"})
    await c.recv_until("input_audio_buffer.cleared")
    assert bytes(sim.sessions[0].input_audio) == b"\x01\x02\x03\x04"
