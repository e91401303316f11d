"""Handshake rules: auth, beta rejection, model checks, the first event."""

from __future__ import annotations

import aiohttp
import pytest

from fsbridge.sim import rt_errors as E
from fsbridge.sim.rt_config import DEFAULT_INSTRUCTIONS


async def _status(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(url, headers=headers)
        # the JSON body is what a plain GET sees
        async with http.get(url, headers=headers) as resp:
            body = await resp.json()
    return exc.value.status, body


async def test_missing_auth_is_401(sim) -> None:
    status, body = await _status(f"{sim.url}?model=gpt-realtime", {})
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "Authorization" in body["error"]["message"]
    assert sim.sessions == []


async def test_wrong_key_is_401_without_echoing_it(make_sim) -> None:
    sim = await make_sim(api_key="sk-right")
    status, body = await _status(
        f"{sim.url}?model=gpt-realtime", {"Authorization": "Bearer sk-wrong-secret"}
    )
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-secret" not in str(body) and "sk-right" not in repr(sim)


async def test_right_key_and_azure_header(make_sim, connect) -> None:
    sim = await make_sim(api_key="sk-right")
    await connect(sim, headers={"Authorization": "Bearer sk-right"})
    await connect(sim, headers={"api-key": "sk-right"})
    assert sim.sessions[1].headers["api-key"] == "sk-right"


async def test_azure_header_can_be_refused(make_sim) -> None:
    sim = await make_sim(accept_api_key_header=False)
    status, _ = await _status(f"{sim.url}?model=gpt-realtime", {"api-key": "k"})
    assert status == 401


async def test_beta_header_gets_error_then_4000(sim, connect) -> None:
    c = await connect(
        sim, headers={"Authorization": "Bearer k", "OpenAI-Beta": "realtime=v1"}, created=False
    )
    err = await c.expect_error(E.BETA_DISABLED_CODE)
    assert err["message"] == E.BETA_DISABLED_MESSAGE
    msg = await c.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert c.ws.close_code == 4000
    assert msg.extra == "invalid_request_error.beta_api_shape_disabled"
    s = sim.sessions[0]
    await sim.wait_for(s.closed.is_set)
    assert s.close_code == 4000
    assert s.sent_types() == ["error"]


async def test_beta_accepted_when_not_rejecting(make_sim, connect) -> None:
    sim = await make_sim(reject_beta=False)
    await connect(sim, headers={"Authorization": "Bearer k", "OpenAI-Beta": "realtime=v1"})


@pytest.mark.parametrize(
    ("model", "code"), [(None, "missing_required_parameter"), ("gpt-4o", "model_not_found")]
)
async def test_bad_model_is_refused(sim, connect, model, code) -> None:
    c = await connect(sim, model=model, created=False)
    err = await c.expect_error(code)
    assert err["param"] == "model"
    await sim.wait_for(sim.sessions[0].closed.is_set)
    assert sim.sessions[0].close_code == E.MODEL_ERROR_CLOSE_CODE


async def test_accepted_models_setting(make_sim, connect) -> None:
    sim = await make_sim(accepted_models=("my-deployment",))
    await connect(sim, model="my-deployment")
    c = await connect(sim, model="gpt-realtime", created=False)
    await c.expect_error("model_not_found")


async def test_session_created_is_the_full_ga_object(sim, connect) -> None:
    c = await connect(sim, model="gpt-realtime-mini")
    session = c.events[0]["session"]
    assert session["id"].startswith("sess_") and session["object"] == "realtime.session"
    assert isinstance(session["expires_at"], int)
    assert session["model"] == "gpt-realtime-mini"
    assert session["instructions"] == DEFAULT_INSTRUCTIONS
    td = session["audio"]["input"]["turn_detection"]
    assert td == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "alloy",
        "speed": 1.0,
    }
    for key in (
        "tools",
        "tool_choice",
        "max_output_tokens",
        "tracing",
        "truncation",
        "prompt",
        "include",
    ):
        assert key in session


async def test_azure_path(sim) -> None:
    async with aiohttp.ClientSession() as http:
        url = sim.url.replace("/v1/realtime", "/openai/v1/realtime") + "?model=gpt-realtime"
        async with http.ws_connect(url, headers={"api-key": "k"}) as ws:
            first = await ws.receive_json(timeout=5)
            assert first["type"] == "session.created"


async def test_client_close_is_recorded(sim, connect) -> None:
    c = await connect(sim)
    await c.ws.close(code=1000)
    s = sim.sessions[0]
    await sim.wait_for(s.closed.is_set)
    assert s.close_code == 1000


async def test_stop_with_a_live_client() -> None:
    import asyncio

    from fsbridge.sim.clock import SimClock
    from fsbridge.sim.realtime import RealtimeSim

    sim = RealtimeSim(clock=SimClock(20.0))
    await sim.start()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{sim.url}?model=gpt-realtime", headers={"Authorization": "Bearer k"}
        )
        assert (await ws.receive_json(timeout=5))["type"] == "session.created"
        await ws.send_json({"type": "response.create"})

        async def read_all() -> None:
            while (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
                pass

        reader = asyncio.create_task(read_all())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sim.stop()
        assert loop.time() - t0 < 1.0
        await reader
        assert ws.close_code == 1001
        s = sim.sessions[0]
        assert s.closed.is_set() and s.close_code == 1001
