"""Fixtures for the Realtime simulator tests: a started simulator, a raw GA client, test audio.

Every event the simulator sent in a test is validated against the ``openai`` GA models at teardown,
and so is every event the test's client sent (unless the test is marked ``invalid_client_events``
because it sends malformed events on purpose).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest

from fsbridge.sim.clock import SimClock
from fsbridge.sim.realtime import RealtimeSim
from tests.openai_schema import validate_client_event, validate_server_event

FAST = 20.0  # SimClock speed where timing is not under test


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "invalid_client_events: the test sends malformed client events on purpose"
    )


def tone(ms: int, dbfs: float = -20.0, freq: float = 300.0) -> bytes:
    """A sine of ``ms`` milliseconds at 24 kHz whose RMS level is ``dbfs``."""
    n = 24 * ms
    amp = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return (np.sin(np.arange(n) * 2 * np.pi * freq / 24000) * amp).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(48 * ms)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pcm_reply(ms: int) -> np.ndarray:
    """Reply audio: a recognisable ramp so byte-exact comparisons mean something."""
    return (np.arange(24 * ms) % 2000 - 1000).astype(np.int16)


class RtClient:
    """A raw GA client over aiohttp: validates what it sends and what it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, validate_sends: bool = True) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._validate_sends = validate_sends

    async def send(self, event: dict[str, Any], *, validate: bool | None = None) -> None:
        if validate if validate is not None else self._validate_sends:
            validate_client_event(event)
        await self.ws.send_str(json.dumps(event))

    async def append(self, pcm: bytes, chunk_ms: int = 20) -> None:
        step = 48 * chunk_ms
        for i in range(0, len(pcm), step):
            await self.send({"type": "input_audio_buffer.append", "audio": b64(pcm[i : i + step])})

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r}")
        event = json.loads(msg.data)
        validate_server_event(event)
        self.events.append(event)
        return event

    async def recv_until(self, etype: str, timeout: float = 5.0) -> dict[str, Any]:
        """Receive until an event of ``etype``; the ones before it stay in ``self.events``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.recv(timeout=max(0.01, deadline - loop.time()))
            if event["type"] == etype:
                return event

    async def expect_error(self, code: str | None, timeout: float = 5.0) -> dict[str, Any]:
        err = (await self.recv_until("error", timeout))["error"]
        assert err["code"] == code, err
        return err

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def close(self) -> None:
        await self.ws.close()


Connect = Callable[..., Awaitable[RtClient]]


@pytest.fixture
async def make_sim(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[RealtimeSim]]]:
    sims: list[RealtimeSim] = []

    async def factory(**kw: Any) -> RealtimeSim:
        kw.setdefault("clock", SimClock(FAST))
        kw.setdefault("delivery_speed", 50.0)
        sim = RealtimeSim(**kw)
        await sim.start()
        sims.append(sim)
        return sim

    yield factory
    check_clients = request.node.get_closest_marker("invalid_client_events") is None
    for sim in sims:
        await sim.stop()
        for s in sim.sessions:
            for _, event in s.sent:
                validate_server_event(event)
            if check_clients:
                for _, event in s.received:
                    validate_client_event(event)


@pytest.fixture
async def sim(make_sim: Callable[..., Awaitable[RealtimeSim]]) -> RealtimeSim:
    return await make_sim()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    http = aiohttp.ClientSession()
    clients: list[RtClient] = []

    async def factory(
        sim: RealtimeSim,
        *,
        model: str | None = "gpt-realtime",
        headers: dict[str, str] | None = None,
        created: bool = True,
    ) -> RtClient:
        url = sim.url if model is None else f"{sim.url}?model={model}"
        ws = await http.ws_connect(url, headers=headers or {"Authorization": "Bearer sk-test"})
        client = RtClient(ws)
        clients.append(client)
        if created:
            first = await client.recv()
            assert first["type"] == "session.created", first
        return client

    yield factory
    for c in clients:
        await c.close()
    await http.close()
