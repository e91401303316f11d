"""Fixtures for the FreeSWITCH simulator's own tests: the sim, greenswitch clients, a fork peer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from fsbridge.audio.wav import read_wav, write_wav
from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from tests.sim_freeswitch.gs_client import GsClient

ASSETS = Path(str(files("fsbridge") / "assets"))


@pytest.fixture
def assets() -> Path:
    return ASSETS


@pytest.fixture
def speed() -> float:
    """Clock speed for the ``sim`` fixture; override per module/test where timing matters."""
    return 10.0


@pytest.fixture
async def sim(speed: float, tmp_path: Path) -> AsyncIterator[FreeSwitchSim]:
    async with FreeSwitchSim(clock=SimClock(speed), sound_prefix=str(tmp_path)) as s:
        yield s


@pytest.fixture
async def gs_factory(sim: FreeSwitchSim) -> AsyncIterator[Callable[..., Awaitable[GsClient]]]:
    clients: list[GsClient] = []

    async def make(
        password: str = "ClueCon", subscribe: str | None = "event plain ALL"
    ) -> GsClient:
        client = GsClient("127.0.0.1", sim.esl_port, password, subscribe)
        clients.append(client)
        return await client.start()

    yield make
    for c in clients:
        await c.stop()


@pytest.fixture
async def gs(gs_factory: Callable[..., Awaitable[GsClient]]) -> GsClient:
    return await gs_factory()


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def ramp(n: int, start: int = 1) -> np.ndarray:
    """Distinct non-zero samples, so a heard frame can be traced back to its file offset."""
    return ((np.arange(n) % 30000) + start).astype(np.int16)


@pytest.fixture
def wav_factory(tmp_path: Path) -> Callable[..., str]:
    def make(name: str, samples: np.ndarray, rate: int = 8000) -> str:
        path = tmp_path / name
        write_wav(path, samples, rate)
        return str(path)

    return make


def load(path: str | Path) -> tuple[np.ndarray, int]:
    return read_wav(path)


# ---------------------------------------------------------------------------- the fork peer


@dataclass
class PeerSession:
    uuid: str
    headers: dict[str, str]
    protocol: str | None
    ws: web.WebSocketResponse
    messages: list[tuple[float, str, Any]] = field(
        default_factory=list
    )  # (sim t, TEXT|BINARY, data)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    reading: asyncio.Event = field(default_factory=asyncio.Event)

    def binary(self) -> list[tuple[float, bytes]]:
        return [(t, d) for t, k, d in self.messages if k == "BINARY"]

    def texts(self) -> list[str]:
        return [d for _, k, d in self.messages if k == "TEXT"]

    def audio(self) -> np.ndarray:
        data = b"".join(d for _, d in self.binary())
        return np.frombuffer(data, dtype="<i2")


class ForkPeer:
    """An aiohttp WebSocket server standing in for the bridge's fork endpoint."""

    def __init__(
        self,
        clock: SimClock,
        *,
        protocols: tuple[str, ...] = ("audio.drachtio.org",),
        auth: str | None = None,
        read: bool = True,
        rcvbuf: int | None = None,
        accept_delay: float = 0.0,
    ) -> None:
        self.clock, self.protocols, self.auth, self.read, self.rcvbuf = (
            clock,
            protocols,
            auth,
            read,
            rcvbuf,
        )
        self.accept_delay = accept_delay  # real seconds before the handshake is answered
        self.sessions: list[PeerSession] = []
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> ForkPeer:
        app = web.Application()
        app.router.add_get("/fork/{uuid}", self._handler)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    def url(self, uuid: str) -> str:
        return f"ws://127.0.0.1:{self.port}/fork/{uuid}"

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            raise web.HTTPUnauthorized()
        if self.accept_delay:
            await asyncio.sleep(self.accept_delay)
        ws = web.WebSocketResponse(protocols=self.protocols, max_msg_size=0)
        await ws.prepare(request)
        s = PeerSession(request.match_info["uuid"], dict(request.headers), ws.ws_protocol, ws)
        self.sessions.append(s)
        self.arrived.set()
        if self.read:
            s.reading.set()
        await s.reading.wait()
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                s.messages.append((self.clock.now(), msg.type.name, msg.data))
        s.close_code = ws.close_code
        s.closed.set()
        return ws

    async def session(self, timeout: float = 5.0) -> PeerSession:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        return self.sessions[0]

    async def stop(self) -> None:
        for s in self.sessions:
            s.reading.set()
            if not s.ws.closed:
                await s.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def peer_factory(sim: FreeSwitchSim) -> AsyncIterator[Callable[..., Awaitable[ForkPeer]]]:
    peers: list[ForkPeer] = []

    async def make(**kwargs: Any) -> ForkPeer:
        p = ForkPeer(sim.clock, **kwargs)
        peers.append(p)
        return await p.start()

    yield make
    for p in peers:
        await p.stop()


async def poll(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)
