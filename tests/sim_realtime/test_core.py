"""The session state machine without sockets: deterministic, timed by the caller, fuzzed."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsbridge.sim.realtime import Reply
from fsbridge.sim.rt_response import StreamSettings
from fsbridge.sim.rt_script import FunctionCallReply, ReplyScript, TranscriptScript
from fsbridge.sim.rt_session import CloseRequest, SessionCore, SimSettings
from tests.openai_schema import validate_server_event
from tests.sim_realtime.conftest import b64, pcm_reply, silence, tone


def _core(replies=None, **kw) -> SessionCore:
    core = SessionCore(
        index=0,
        model="gpt-realtime",
        settings=SimSettings(seed=7, **kw),
        script=ReplyScript(replies or [Reply(audio=pcm_reply(500), transcript="Hello there.")]),
        transcripts=TranscriptScript(["hi"]),
    )
    core.open(0.0, 1_900_000_000)
    return core


def _drain(core: SessionCore) -> list[dict]:
    out = core.take_outbox()
    for ev in out:
        if isinstance(ev, dict):
            validate_server_event(ev)
    return out


def _send(core: SessionCore, t: float, ev: dict) -> list[dict]:
    core.handle_text(json.dumps(ev), t)
    return _drain(core)


def test_timers_drive_the_stream() -> None:
    core = _core(stream=StreamSettings(delivery_speed=2.0, delta_ms=100, first_delta_delay_s=0.2))
    assert [e["type"] for e in _drain(core)] == ["session.created"]
    assert core.next_deadline() == 3600.0  # only expiry armed
    types = [e["type"] for e in _send(core, 1.0, {"type": "response.create"})]
    assert types == ["response.created", "rate_limits.updated"]
    assert core.next_deadline() == 1.2
    core.on_timer(1.19)
    assert _drain(core) == []
    core.on_timer(1.2)
    first = [e["type"] for e in _drain(core)]
    assert first[:4] == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.delta",
    ]
    assert core.next_deadline() == 1.25  # 100 ms of audio at 2x
    core.on_timer(5.0)  # late wake-up: everything due is caught up in order
    rest = [e["type"] for e in _drain(core)]
    assert rest.count("response.output_audio.delta") == 4 and rest[-1] == "response.done"
    assert core.responses[0].status == "completed"


def test_same_seed_same_ids() -> None:
    a, b = _core(), _core()
    assert [e["event_id"] for e in _drain(a)] == [e["event_id"] for e in _drain(b)]


def test_input_arriving_after_a_deadline_sees_it_first() -> None:
    replies = [Reply(audio=pcm_reply(1000), transcript="x")]
    core = _core(replies, stream=StreamSettings(delivery_speed=1.0, first_delta_delay_s=0.1))
    _drain(core)
    _send(core, 0.0, {"type": "response.create"})
    out = _send(core, 0.5, {"type": "response.cancel"})  # deltas due at 0.1..0.5 come first
    types = [e["type"] for e in out]
    assert types.count("response.output_audio.delta") == 5
    assert types[-1] == "response.done" and out[-1]["response"]["status"] == "cancelled"


def test_expiry_closes() -> None:
    core = _core(session_max_s=10.0)
    _drain(core)
    core.on_timer(10.0)
    out = core.take_outbox()
    assert out[0]["error"]["code"] == "session_expired"
    assert out[1] == CloseRequest(1001, "")
    assert core.ended and core.next_deadline() is None
    core.handle_text('{"type":"response.create"}', 11.0)
    assert core.take_outbox() == []


_EVENTS = st.sampled_from(
    [
        {"type": "response.create"},
        {"type": "response.create", "response": {"output_modalities": ["text"]}},
        {"type": "response.cancel"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "input_audio_buffer.append", "audio": b64(tone(200))},
        {"type": "input_audio_buffer.append", "audio": b64(silence(300))},
        {"type": "input_audio_buffer.append", "audio": "%%%"},
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": "ash"}}},
        },
        {"type": "session.update", "session": {"modalities": ["text"]}},
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_x", "output": "{}"},
        },
        {
            "type": "conversation.item.truncate",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        {"type": "conversation.item.delete", "item_id": "item_x"},
        {"type": "output_audio_buffer.clear"},
        {"type": "nonsense"},
        {"no_type": True},
        {"type": 5},
    ]
)
_JUNK = st.one_of(st.text(max_size=30), st.builds(json.dumps, st.lists(st.integers(), max_size=3)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.one_of(_EVENTS, _JUNK), st.floats(min_value=0.0, max_value=0.5)), max_size=25
    )
)
def test_fuzz_any_sequence_is_answered_with_valid_events(steps) -> None:
    core = _core(
        replies=[
            Reply(audio=pcm_reply(300), transcript="a b"),
            FunctionCallReply(name="f", arguments={"a": 1}),
        ]
    )
    _drain(core)
    t = 0.0
    for ev, dt in steps:
        t += dt
        core.on_timer(t)
        core.handle_text(ev if isinstance(ev, str) else json.dumps(ev), t)
        _drain(core)
        assert sum(1 for r in core.responses if r.status == "in_progress") <= 1
    core.on_timer(t + 100.0)
    _drain(core)
    assert all(r.status != "in_progress" for r in core.responses)
    sent_ok = [r for r in core.responses if r.status == "completed"]
    for r in sent_ok:
        assert (
            r.done_t is not None
            and r.usage["total_tokens"] == r.usage["input_tokens"] + r.usage["output_tokens"]
        )
