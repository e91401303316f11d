"""Responses: the captured GA sequence, audio and pacing, usage sums, concurrency rules."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from fsbridge.audio.wav import read_wav
from fsbridge.sim import rt_errors as E
from fsbridge.sim.clock import SimClock
from fsbridge.sim.realtime import Reply
from fsbridge.sim.rt_script import default_reply
from tests.sim_realtime.conftest import pcm_reply

AUDIO_SEQUENCE = [
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
TAIL = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


def _response_events(client) -> list[dict]:
    start = max(i for i, e in enumerate(client.events) if e["type"] == "response.created")
    return client.events[start:]


def _usage_holds(u: dict) -> None:
    itd, otd = u["input_token_details"], u["output_token_details"]
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert u["input_tokens"] == itd["text_tokens"] + itd["audio_tokens"] + itd["image_tokens"]
    assert itd["cached_tokens"] == sum(itd["cached_tokens_details"].values())
    assert itd["cached_tokens"] <= u["input_tokens"]
    assert itd["cached_tokens_details"]["audio_tokens"] <= itd["audio_tokens"]
    assert itd["cached_tokens_details"]["text_tokens"] <= itd["text_tokens"]
    assert u["output_tokens"] == otd["text_tokens"] + otd["audio_tokens"]


async def test_sequence_audio_and_transcript(make_sim, connect) -> None:
    reply = default_reply()
    sim = await make_sim(replies=[reply])
    c = await connect(sim)
    await c.send({"type": "response.create"})
    done = await c.recv_until("response.done")
    evs = _response_events(c)
    types = [e["type"] for e in evs]
    assert types[:5] == AUDIO_SEQUENCE
    assert types[-6:] == TAIL
    middle = set(types[5:-6])
    assert middle == {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in evs if e["type"] == "response.output_audio.delta"
    )
    expected, _ = read_wav(reply.audio)
    assert audio == expected.astype("<i2").tobytes()
    transcript = "".join(
        e["delta"] for e in evs if e["type"] == "response.output_audio_transcript.delta"
    )
    assert transcript == reply.transcript
    tdone = next(e for e in evs if e["type"] == "response.output_audio_transcript.done")
    assert tdone["transcript"] == reply.transcript
    # transcript deltas interleave with the audio, not all at the end
    first_t = types.index("response.output_audio_transcript.delta")
    assert first_t < len(types) // 2
    resp = done["response"]
    assert resp["status"] == "completed" and resp["status_details"] is None
    assert resp["output"][0]["content"] == [
        {"type": "output_audio", "transcript": reply.transcript}
    ]
    assert resp["conversation_id"].startswith("conv_")
    item_ids = {e.get("item_id") for e in evs if "item_id" in e}
    assert item_ids == {resp["output"][0]["id"]}
    _usage_holds(resp["usage"])
    audio_ms = len(audio) / 48
    assert resp["usage"]["output_token_details"]["audio_tokens"] == round(audio_ms / 50)
    s = sim.sessions[0]
    rec = s.responses[0]
    assert rec.status == "completed" and rec.audio_ms_sent == pytest.approx(audio_ms)
    assert s.items[-1]["audio_ms"] == pytest.approx(audio_ms)


async def test_usage_grows_and_caches_over_turns(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(3000), transcript="word " * 40)])
    c = await connect(sim)
    usages = []
    for _ in range(3):
        await c.send({"type": "response.create"})
        usages.append((await c.recv_until("response.done"))["response"]["usage"])
    for u in usages:
        _usage_holds(u)
    assert usages[0]["input_token_details"]["cached_tokens"] == 0
    assert usages[2]["input_tokens"] > usages[1]["input_tokens"] > usages[0]["input_tokens"]
    assert usages[2]["input_token_details"]["cached_tokens"] > 0
    # the conversation's audio is input: 3 s of assistant audio ≈ 30 tokens per earlier turn
    assert usages[1]["input_token_details"]["audio_tokens"] == 30
    assert c.types().count("rate_limits.updated") == 3


async def test_rate_limits_after_done_setting(make_sim, connect) -> None:
    sim = await make_sim(rate_limits_at="done", rate_limit_names=("requests", "tokens"))
    c = await connect(sim)
    await c.send({"type": "response.create"})
    await c.recv_until("response.done")
    rl = await c.recv_until("rate_limits.updated")
    assert [r["name"] for r in rl["rate_limits"]] == ["requests", "tokens"]
    assert c.types().count("rate_limits.updated") == 1


async def test_pacing_first_delta_and_delta_size(make_sim, connect) -> None:
    clock = SimClock(2.0)
    sim = await make_sim(
        clock=clock,
        replies=[Reply(audio=pcm_reply(1000), transcript="one two three")],
        delivery_speed=4.0,
        delta_ms=100,
        first_delta_delay_s=0.15,
    )
    c = await connect(sim)
    await c.send({"type": "response.create"})
    await c.recv_until("response.done")
    rec = sim.sessions[0].responses[0]
    times = [t for t, _, _ in rec.deltas]
    sizes = [n for _, _, n in rec.deltas]
    first = rec.first_delta_t - rec.created_t
    spacing = (times[-1] - times[0]) / (len(times) - 1)
    print(f"first delta after {first * 1000:.1f} ms, spacing {spacing * 1000:.1f} ms (sim time)")
    assert sizes == [4800] * 10
    assert 0.15 - 1e-6 <= first < 0.15 + 0.1  # lower bound exact, upper: scheduling slack
    assert spacing == pytest.approx(0.025, rel=0.2)  # 100 ms of audio at 4x real time
    # the sent record agrees (socket write times)
    sent = [t for t, e in sim.sessions[0].sent if e["type"] == "response.output_audio.delta"]
    assert len(sent) == 10 and sent[0] >= rec.first_delta_t


async def test_odd_length_deltas(make_sim, connect) -> None:
    pcm = pcm_reply(730)
    sim = await make_sim(
        replies=[Reply(audio=pcm, transcript="odd")], odd_deltas=True, delta_ms=100
    )
    c = await connect(sim)
    await c.send({"type": "response.create"})
    await c.recv_until("response.done")
    deltas = [
        base64.b64decode(e["delta"]) for e in c.events if e["type"] == "response.output_audio.delta"
    ]
    assert all(len(d) % 2 == 1 for d in deltas[:-1])
    assert b"".join(deltas) == pcm.astype("<i2").tobytes()


async def test_second_create_during_response(make_sim, connect) -> None:
    sim = await make_sim(
        replies=[Reply(audio=pcm_reply(2000), transcript="long")], delivery_speed=1.0
    )
    c = await connect(sim)
    await c.send({"type": "response.create"})
    created = await c.recv_until("response.created")
    await c.send({"type": "response.create", "event_id": "dup"})
    err = await c.expect_error(E.ACTIVE_RESPONSE_CODE)
    rid = created["response"]["id"]
    assert err["message"] == E.active_response_message(rid)
    assert rid in err["message"] and err["event_id"] == "dup"
    await c.send({"type": "response.cancel"})
    await c.recv_until("response.done")


async def test_cancel_not_active(sim, connect) -> None:
    c = await connect(sim)
    await c.send({"type": "response.cancel"})
    err = await c.expect_error(E.CANCEL_NOT_ACTIVE_CODE)
    assert err["message"] == "Cancellation failed: no active response found"


async def test_client_cancel(make_sim, connect) -> None:
    sim = await make_sim(
        replies=[Reply(audio=pcm_reply(3000), transcript="a b c d e f")], delivery_speed=1.0
    )
    c = await connect(sim)
    await c.send({"type": "response.create"})
    await c.recv_until("response.output_audio.delta")
    await c.send({"type": "response.cancel", "response_id": "resp_other"})
    await c.expect_error(E.CANCEL_NOT_ACTIVE_CODE)
    await c.send({"type": "response.cancel"})
    done = await c.recv_until("response.done")
    resp = done["response"]
    assert resp["status"] == "cancelled"
    assert resp["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert resp["output"][0]["status"] == "incomplete"
    types = [e["type"] for e in _response_events(c)]
    assert types[-6:] == TAIL
    rec = sim.sessions[0].responses[0]
    assert 0 < rec.audio_ms_sent < 3000
    assert sim.sessions[0].items[0]["audio_ms"] == pytest.approx(rec.audio_ms_sent)
    _usage_holds(resp["usage"])
    assert resp["usage"]["output_token_details"]["audio_tokens"] == round(rec.audio_ms_sent / 50)
    await c.send({"type": "response.cancel"})
    await c.expect_error(E.CANCEL_NOT_ACTIVE_CODE)


async def test_response_create_options(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(300), transcript="Hello there, friend.")])
    c = await connect(sim)
    await c.send(
        {
            "type": "response.create",
            "response": {
                "instructions": "Greet the caller.",
                "metadata": {"turn": "1"},
                "audio": {"output": {"voice": "cedar"}},
            },
        }
    )
    done = await c.recv_until("response.done")
    assert done["response"]["metadata"] == {"turn": "1"}
    assert done["response"]["audio"]["output"]["voice"] == "cedar"
    rec = sim.sessions[0].responses[0]
    assert rec.instructions == "Greet the caller." and rec.trigger == "client"
    # text modality for one response
    await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    done = await c.recv_until("response.done")
    evs = _response_events(c)
    text = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
    assert text == "Hello there, friend."
    assert "response.output_audio.delta" not in [e["type"] for e in evs]
    assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": text}]


async def test_max_output_tokens_gives_incomplete(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(2000), transcript="one two three four")])
    c = await connect(sim)
    await c.send({"type": "response.create", "response": {"max_output_tokens": 10}})
    done = await c.recv_until("response.done")
    assert done["response"]["status"] == "incomplete"
    assert done["response"]["status_details"] == {
        "type": "incomplete",
        "reason": "max_output_tokens",
    }
    rec = sim.sessions[0].responses[0]
    assert rec.audio_ms_sent == pytest.approx(500)
    assert rec.transcript_sent == "" or len(rec.transcript_sent) < len("one two three four")


async def test_replies_in_turn_order_then_last_or_cycle(make_sim, connect) -> None:
    a, b = Reply(audio=pcm_reply(100), transcript="A"), Reply(audio=pcm_reply(100), transcript="B")
    for mode, expected in (("last", "ABBB"), ("cycle", "ABAB")):
        sim = await make_sim(replies=[a, b], exhausted=mode)
        c = await connect(sim)
        got = ""
        for _ in range(4):
            await c.send({"type": "response.create"})
            got += (await c.recv_until("response.output_audio_transcript.done"))["transcript"]
            await c.recv_until("response.done")
        assert got == expected


async def test_reply_callable_sees_session_and_turn(make_sim, connect) -> None:
    seen = []

    def pick(session, turn):
        seen.append((session.index, turn))
        return Reply(audio=np.zeros(2400, dtype=np.int16), transcript=f"turn {turn}")

    sim = await make_sim(replies=pick)
    c = await connect(sim)
    for _ in range(2):
        await c.send({"type": "response.create"})
        await c.recv_until("response.done")
    assert seen == [(0, 0), (0, 1)]


def test_bad_reply_audio_is_a_clear_error(tmp_path) -> None:
    from fsbridge.audio.wav import write_wav
    from fsbridge.sim.realtime import RealtimeSim

    p = tmp_path / "r8k.wav"
    write_wav(p, np.zeros(800, dtype=np.int16), 8000)
    with pytest.raises(ValueError, match="24000"):
        RealtimeSim(replies=[Reply(audio=p)])
    with pytest.raises(ValueError, match="int16"):
        RealtimeSim(replies=[Reply(audio=np.zeros(10, dtype=np.float32))])
    with pytest.raises(TypeError, match="unknown RealtimeSim settings"):
        RealtimeSim(delivery_sped=2)


async def test_g711_formats(make_sim, connect) -> None:
    """audio/pcmu both ways: 8 bytes per ms, VAD on decoded G.711, item lengths in G.711 ms."""
    from fsbridge.sim.rt_audio import ulaw_encode

    sim = await make_sim(replies=[Reply(audio=pcm_reply(1000), transcript="x")])
    c = await connect(sim)
    ulaw = {"type": "audio/pcmu"}
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": ulaw}, "output": {"format": ulaw}},
            },
        }
    )
    assert (await c.recv_until("session.updated"))["session"]["audio"]["output"]["format"] == ulaw
    n = 8 * 600
    speech = ulaw_encode(
        (np.sin(np.arange(n) * 2 * np.pi * 300 / 8000) * 3000).astype(np.int16)
    ).tobytes()
    quiet = ulaw_encode(np.zeros(8 * 400, dtype=np.int16)).tobytes()
    for chunk in (quiet, speech, quiet):
        for i in range(0, len(chunk), 160):
            await c.send(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(chunk[i : i + 160]).decode(),
                }
            )
    started = await c.recv_until("input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == 400 - 300
    done = await c.recv_until("response.done")
    assert done["response"]["audio"]["output"]["format"] == ulaw
    rec = sim.sessions[0].responses[0]
    assert rec.bytes_per_ms == 8 and rec.audio_bytes_sent == 8000
    assert {n for _, _, n in rec.deltas} == {800}
    assert sim.sessions[0].items[-1]["audio_ms"] == pytest.approx(1000)
