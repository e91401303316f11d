"""Fault injection, session expiry, idle timeout and input transcription."""

from __future__ import annotations

import aiohttp
import pytest

from fsbridge.sim import rt_errors as E
from fsbridge.sim.clock import SimClock
from fsbridge.sim.realtime import Reply
from tests.sim_realtime.conftest import pcm_reply, silence, tone


async def _closed(c) -> aiohttp.WSMessage:
    while True:
        msg = await c.ws.receive(timeout=5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return msg


async def test_drop_now(sim, connect) -> None:
    c = await connect(sim)
    sim.inject_fault(0, "drop")
    msg = await _closed(c)
    assert msg.type != aiohttp.WSMsgType.CLOSE  # no close frame: the socket just died
    s = sim.sessions[0]
    await sim.wait_for(s.closed.is_set)
    assert s.close_code == 1006


async def test_drop_after_n_events_for_a_future_session(sim, connect) -> None:
    sim.inject_fault(0, "drop", after_events=3)
    c = await connect(sim)  # event 1: session.created
    await c.send({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
    await c.recv_until("session.updated")  # event 2
    await c.send({"type": "response.create"})
    await c.recv_until("response.created")  # event 3
    await _closed(c)
    s = sim.sessions[0]
    await sim.wait_for(s.closed.is_set)
    assert len(s.sent) == 3 and s.close_code == 1006


async def test_delay_everything(make_sim, connect) -> None:
    sim = await make_sim(clock=SimClock(10.0))
    c = await connect(sim)
    sim.inject_fault(0, "delay", seconds=1.0)
    await c.send({"type": "input_audio_buffer.clear"})
    await c.recv_until("input_audio_buffer.cleared")
    s = sim.sessions[0]
    t_in = s.received[-1][0]
    t_out = s.sent[-1][0]
    print(f"delayed by {t_out - t_in:.3f} s (sim)")
    assert 1.0 - 1e-3 <= t_out - t_in < 1.5


@pytest.mark.parametrize(
    ("kind", "code", "etype"),
    [("server_error", "server_error", "server_error"), ("rate_limit", E.RATE_LIMIT_CODE, "tokens")],
)
async def test_next_response_fails(make_sim, connect, kind, code, etype) -> None:
    sim = await make_sim()
    c = await connect(sim)
    sim.inject_fault(0, kind)
    await c.send({"type": "response.create"})
    done = await c.recv_until("response.done")
    resp = done["response"]
    assert resp["status"] == "failed" and resp["output"] == []
    err = resp["status_details"]["error"]
    assert resp["status_details"]["type"] == "failed"
    assert err["code"] == code and err["type"] == etype and err["message"]
    assert resp["usage"]["total_tokens"] == 0
    # the one after works again
    await c.send({"type": "response.create"})
    assert (await c.recv_until("response.done"))["response"]["status"] == "completed"


async def test_active_response_fails_mid_stream(make_sim, connect) -> None:
    sim = await make_sim(
        replies=[Reply(audio=pcm_reply(3000), transcript="a b c")], delivery_speed=0.5
    )
    c = await connect(sim)
    await c.send({"type": "response.create"})
    await c.recv_until("response.output_audio.delta")
    sim.inject_fault(0, "server_error")
    done = await c.recv_until("response.done")
    assert done["response"]["status"] == "failed"
    assert "response.output_item.done" in c.types()
    assert sim.sessions[0].responses[0].status == "failed"


def test_fault_arguments_are_checked_before_connect(sim) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject_fault(0, "explode")
    with pytest.raises(TypeError, match="seconds"):
        sim.inject_fault(0, "delay")
    assert sim._pending_faults == {}


async def test_bad_fault_on_live_session(sim, connect) -> None:
    await connect(sim)
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject_fault(0, "explode")
    with pytest.raises(TypeError, match="unexpected"):
        sim.inject_fault(0, "delay", seconds=0.0, extra=1)


async def test_session_expiry(make_sim, connect) -> None:
    sim = await make_sim(clock=SimClock(400.0), session_max_s=120.0)
    c = await connect(sim)
    err = await c.expect_error(E.SESSION_EXPIRED_CODE, timeout=5)
    assert err["message"] == "Your session hit the maximum duration of 2 minutes."
    assert err["event_id"] is None and err["type"] == "invalid_request_error"
    msg = await _closed(c)
    assert msg.type == aiohttp.WSMsgType.CLOSE and c.ws.close_code == 1001
    s = sim.sessions[0]
    await sim.wait_for(s.closed.is_set)
    assert s.close_code == 1001
    assert s.sent[-1][0] >= 120.0  # on the sim clock
    created = s.sent[0][1]["session"]["expires_at"]
    assert isinstance(created, int)


async def test_idle_timeout(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(500), transcript="Hello?")])
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 2000}}
                },
            },
        }
    )
    await c.recv_until("session.updated")
    await c.send({"type": "response.create"})
    await c.recv_until("response.done")
    await c.append(silence(300))
    trig = await c.recv_until("input_audio_buffer.timeout_triggered")
    assert trig["audio_end_ms"] == 300 and trig["audio_start_ms"] == 0
    committed = await c.recv_until("input_audio_buffer.committed")
    assert committed["item_id"] == trig["item_id"]
    await c.recv_until("response.done")
    s = sim.sessions[0]
    first, second = s.responses[:2]
    assert second.trigger == "idle"
    # playback of the first reply (0.5 s) + idle timeout (2 s) after its response.done
    assert 2.5 - 1e-6 <= second.created_t - first.done_t < 2.5 + 0.6


async def test_input_transcription(make_sim, connect) -> None:
    sim = await make_sim(input_transcripts=["What are your opening hours?"])
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"transcription": {"model": "gpt-4o-transcribe", "language": "en"}}
                },
            },
        }
    )
    await c.recv_until("session.updated")
    await c.append(silence(200) + tone(700) + silence(400))
    done = await c.recv_until("conversation.item.input_audio_transcription.completed")
    assert done["transcript"] == "What are your opening hours?"
    u = done["usage"]
    assert u["type"] == "tokens" and u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert "conversation.item.input_audio_transcription.delta" in c.types()
    user = sim.sessions[0].items[0]
    assert user["id"] == done["item_id"] and user["content"][0]["transcript"] == done["transcript"]


async def test_whisper_transcription_reports_seconds(make_sim, connect) -> None:
    sim = await make_sim(input_transcripts=lambda s, i: f"turn {i}")
    c = await connect(sim)
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}
                },
            },
        }
    )
    await c.recv_until("session.updated")
    await c.append(tone(500))
    await c.send({"type": "input_audio_buffer.commit"})
    done = await c.recv_until("conversation.item.input_audio_transcription.completed")
    assert done["transcript"] == "turn 0"
    assert done["usage"] == {"type": "duration", "seconds": 0.5}
    assert "conversation.item.input_audio_transcription.delta" not in c.types()


async def test_simulator_bug_becomes_server_error(sim, connect, monkeypatch) -> None:
    c = await connect(sim)
    s = sim.sessions[0]

    def boom(event, now):
        raise RuntimeError("bug")

    monkeypatch.setitem(s._handlers, "input_audio_buffer.clear", boom)
    await c.send({"type": "input_audio_buffer.clear"})
    err = await c.expect_error("server_error")
    assert err["type"] == "server_error"
    await _closed(c)
    await sim.wait_for(s.closed.is_set)
    assert s.close_code == 1011
