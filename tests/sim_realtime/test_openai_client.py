"""The official ``openai`` client holds a whole conversation with the simulator.

Needs the ``websockets`` package (``openai[realtime]``).
"""

from __future__ import annotations

import base64

import pytest

from fsbridge.sim.realtime import FunctionCallReply, Reply
from tests.openai_schema import validate_server_event
from tests.sim_realtime.conftest import b64, pcm_reply, silence, tone

pytest.importorskip("websockets")
openai = pytest.importorskip("openai")


async def _until(conn, etype: str, seen: list) -> object:
    async for event in conn:
        seen.append(event)
        validate_server_event(event.to_dict())
        if event.type == etype:
            return event
    raise AssertionError(f"connection ended before {etype}")


async def test_openai_client_conversation(make_sim) -> None:
    sim = await make_sim(
        api_key="sk-sim-test",
        replies=[
            Reply(audio=pcm_reply(600), transcript="We open at nine."),
            FunctionCallReply(name="lookup", arguments={"q": "hours"}),
            Reply(audio=pcm_reply(300), transcript="Done."),
        ],
    )
    client = openai.AsyncOpenAI(
        api_key="sk-sim-test", websocket_base_url=f"ws://127.0.0.1:{sim.port}/v1"
    )
    seen: list = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await _until(conn, "session.created", seen)
        assert created.session.type == "realtime"
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer briefly.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
                },
                "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            }
        )
        updated = await _until(conn, "session.updated", seen)
        assert updated.session.audio.output.voice == "marin"
        # turn 1: speech -> VAD -> audio reply
        pcm = silence(300) + tone(700) + silence(500)
        for i in range(0, len(pcm), 960):
            await conn.input_audio_buffer.append(audio=b64(pcm[i : i + 960]))
        done = await _until(conn, "response.done", seen)
        assert done.response.status == "completed"
        audio = b"".join(
            base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta"
        )
        assert audio == pcm_reply(600).astype("<i2").tobytes()
        # turn 2: a function call, its output, then a reply on request
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "look it up"}],
            }
        )
        await conn.response.create()
        call = await _until(conn, "response.function_call_arguments.done", seen)
        assert call.name == "lookup" and call.arguments == '{"q":"hours"}'
        await _until(conn, "response.done", seen)
        await conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": '{"hours":"9-18"}',
            }
        )
        await _until(conn, "conversation.item.done", seen)
        await conn.response.create(response={"instructions": "Say done."})
        final = await _until(conn, "response.done", seen)
        assert final.response.output[0].content[0].transcript == "Done."
    s = sim.sessions[0]
    await sim.wait_for(s.closed.is_set)
    assert s.headers["Authorization"] == "Bearer sk-sim-test"
    assert "OpenAI-Beta" not in s.headers
    assert [r.status for r in s.responses] == ["completed"] * 3
    assert s.responses[2].instructions == "Say done."


async def test_openai_client_gets_401_with_wrong_key(make_sim) -> None:
    sim = await make_sim(api_key="sk-right")
    client = openai.AsyncOpenAI(
        api_key="sk-wrong", websocket_base_url=f"ws://127.0.0.1:{sim.port}/v1"
    )
    with pytest.raises(Exception) as exc:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
    assert "401" in str(exc.value)
