"""ForkServer on a real aiohttp site (port 0), with an aiohttp client playing mod_audio_fork.

mod_audio_fork (reference/mod-audio-fork.md §2): requests subprotocol audio.drachtio.org, sends
Basic credentials, then the metadata as the first TEXT frame (two texts may be glued), then
BINARY L16 frames, and closes with 1000. mod_audio_stream sends no subprotocol and may send
audio before its metadata.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from fsbridge.fork import SUBPROTOCOL, ForkServer, ForkStream

UUID = "6f1c9a52-8d1e-4c57-9a3e-0d2b7c1e5f00"
USER, PASSWORD = "fork-6f1c", "one-time-Pa55"


@dataclass
class Site:
    server: ForkServer
    base: str
    http: aiohttp.ClientSession

    def url(self, uuid: str = UUID) -> str:
        return f"{self.base}/fork/{uuid}"

    async def connect(
        self,
        uuid: str = UUID,
        auth: tuple[str, str] = (USER, PASSWORD),
        protocols: tuple[str, ...] = (SUBPROTOCOL,),
    ) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(
            self.url(uuid), protocols=protocols, headers={"Authorization": basic(*auth)}
        )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextlib.asynccontextmanager
async def serve(server: ForkServer) -> AsyncIterator[Site]:
    app = web.Application()
    server.add_routes(app)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            yield Site(server, f"http://127.0.0.1:{port}", http)
    finally:
        await runner.cleanup()
    assert server.live_streams == 0


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with serve(ForkServer(max_frame_bytes=4096, close_timeout=2.0)) as s:
        yield s


async def wait_until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def read_all(stream: ForkStream, timeout: float = 3.0) -> list[bytes]:
    async def run() -> list[bytes]:
        return [frame async for frame in stream.frames()]

    return await asyncio.wait_for(run(), timeout)


async def test_subprotocol_echo_metadata_and_frames_in_order(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fsbridge.fork")
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect()
    assert ws.protocol == SUBPROTOCOL
    stream = await site.server.accept(UUID, timeout=2)
    assert stream.subprotocol == SUBPROTOCOL and stream.uuid == UUID
    await ws.send_str('{"callId":"abc","sampleRate":8000}')
    frames = [bytes([i % 256]) * 320 for i in range(50)]
    for frame in frames:
        await ws.send_bytes(frame)
    await ws.close()
    assert await read_all(stream) == frames
    assert stream.metadata == ['{"callId":"abc","sampleRate":8000}']
    assert (stream.frames_received, stream.bytes_received, stream.frames_dropped) == (
        50,
        50 * 320,
        0,
    )
    assert stream.close_code == 1000
    assert not stream.live
    assert len(caplog.records) <= 2  # connected + ended, nothing per frame


async def test_no_subprotocol_like_mod_audio_stream(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect(protocols=())
    assert ws.protocol is None
    stream = await site.server.accept(UUID, timeout=2)
    assert stream.subprotocol is None
    await ws.send_bytes(b"\x01\x00" * 160)  # audio before the metadata
    await ws.send_str('{"meta":1}')
    await ws.send_bytes(b"\x02\x00" * 160)
    await ws.close()
    assert await read_all(stream) == [b"\x01\x00" * 160, b"\x02\x00" * 160]
    assert stream.metadata == ['{"meta":1}']


async def test_foreign_subprotocol_is_never_answered(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect(protocols=("something.else",))
    assert ws.protocol is None
    await ws.close()


async def test_wrong_credentials_401(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    caplog.set_level(logging.INFO, logger="fsbridge.fork")
    for auth in ((USER, "guess-1234"), ("x", PASSWORD)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await site.connect(auth=auth)
        assert info.value.status == 401
    async with site.http.get(site.url(), headers={"Upgrade": "websocket"}) as resp:
        assert resp.status == 401  # no Authorization at all
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
    text = caplog.text
    assert UUID in text
    assert "guess-1234" not in text and PASSWORD not in text
    # The right credentials still work afterwards.
    ws = await site.connect()
    await ws.close()
    assert site.server.stats.unauthorized == 3 and site.server.stats.accepted == 1


async def test_unknown_uuid_401(site: Site) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await site.connect(uuid="not-a-call")
    assert info.value.status == 401


async def test_second_connection_409_and_credentials_are_one_time(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    first = await site.connect()
    stream = await site.server.accept(UUID, timeout=2)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await site.connect()
    assert info.value.status == 409
    await first.close()
    assert await read_all(stream) == []
    # Used credentials do not let anyone in again.
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await site.connect()
    assert info.value.status == 401
    assert site.server.stats.conflicts == 1


async def test_glued_metadata_is_split(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect()
    stream = await site.server.accept(UUID, timeout=2)
    await ws.send_str('{"a":"}{"}{"type":"text","b":[1,2]}')
    await ws.send_str("plain words")
    await ws.close()
    await read_all(stream)
    assert stream.metadata == ['{"a":"}{"}', '{"type":"text","b":[1,2]}', "plain words"]
    assert stream.text_messages == 2


async def test_odd_and_empty_and_oversized_frames(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect()
    stream = await site.server.accept(UUID, timeout=2)
    sent = [b"\x01\x02\x03", b"\x04", b"\x05" * 641]
    await ws.send_bytes(sent[0])
    await ws.send_bytes(b"")  # graceful-shutdown marker: skipped
    await ws.send_bytes(sent[1])
    for _ in range(3):
        await ws.send_bytes(b"\x00" * 5000)  # over the 4096-byte limit: dropped, once logged
    await ws.send_bytes(sent[2])
    await ws.close()
    assert await read_all(stream) == sent
    assert stream.frames_dropped == 3 and stream.empty_frames == 1
    assert stream.shutdown_requested
    assert caplog.text.count("exceeds") == 1


async def test_accept_before_and_after_connect(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    waiter = asyncio.ensure_future(site.server.accept(UUID, timeout=3))
    ws = await site.connect()
    stream = await waiter
    # A later accept() returns the same stream.
    assert await site.server.accept(UUID, timeout=1) is stream
    await ws.close()
    await read_all(stream)


async def test_accept_timeout_and_unknown(site: Site) -> None:
    with pytest.raises(KeyError):
        await site.server.accept("nobody", timeout=0.1)
    site.server.expect(UUID, USER, PASSWORD)
    with pytest.raises(asyncio.TimeoutError):
        await site.server.accept(UUID, timeout=0.1)


async def test_server_close_ends_frames(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect()
    stream = await site.server.accept(UUID, timeout=2)
    await ws.send_bytes(b"\x01\x00" * 160)
    await wait_until(lambda: stream.frames_received == 1)
    reader = asyncio.ensure_future(read_all(stream))
    await asyncio.wait_for(stream.close(), 3)
    assert await reader == [b"\x01\x00" * 160]
    msg = await asyncio.wait_for(ws.receive(), 2)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1000  # the code mod_audio_fork sees
    await stream.close()  # idempotent
    assert not stream.live


async def test_forget_drops_a_live_stream(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    ws = await site.connect()
    stream = await site.server.accept(UUID, timeout=2)
    site.server.forget(UUID)
    assert await read_all(stream) == []
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await site.connect()
    assert info.value.status == 401


async def test_forget_wakes_a_waiting_accept(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    waiter = asyncio.ensure_future(site.server.accept(UUID, timeout=5))
    await asyncio.sleep(0)
    site.server.forget(UUID)
    with pytest.raises(KeyError):
        await asyncio.wait_for(waiter, 1)


def test_expect_rejects_credentials_mod_audio_fork_cannot_send() -> None:
    server = ForkServer()
    with pytest.raises(ValueError):
        server.expect(UUID, "", "x")
    with pytest.raises(ValueError):
        server.expect(UUID, "a:b", "x")
    with pytest.raises(ValueError, match="Authorization"):
        server.expect(UUID, "u" * 40, "p" * 50)


async def test_plain_get_is_400(site: Site) -> None:
    site.server.expect(UUID, USER, PASSWORD)
    async with site.http.get(site.url(), headers={"Authorization": basic(USER, PASSWORD)}) as resp:
        assert resp.status == 400
    ws = await site.connect()  # credentials were not used up by the failed request
    await ws.close()


async def test_many_streams_concurrently(site: Site) -> None:
    uuids = [f"call-{i}" for i in range(20)]
    for u in uuids:
        site.server.expect(u, f"user-{u}", f"pw-{u}")

    async def one(u: str) -> list[bytes]:
        ws = await site.connect(u, auth=(f"user-{u}", f"pw-{u}"))
        stream = await site.server.accept(u, timeout=2)
        for i in range(25):
            await ws.send_bytes(u.encode() + bytes([i]))
        await ws.close()
        return await read_all(stream)

    results = await asyncio.gather(*(one(u) for u in uuids))
    for u, frames in zip(uuids, results, strict=True):
        assert frames == [u.encode() + bytes([i]) for i in range(25)]


async def test_stalled_reader_is_bounded() -> None:
    async with serve(ForkServer(max_queued_frames=5)) as site:
        site.server.expect(UUID, USER, PASSWORD)
        ws = await site.connect()
        stream = await site.server.accept(UUID, timeout=2)
        for i in range(12):
            await ws.send_bytes(bytes([i]) * 4)
        await wait_until(lambda: stream.frames_received == 12)
        assert stream.frames_dropped == 7
        await ws.close()
        assert await read_all(stream) == [bytes([i]) * 4 for i in range(5)]


async def test_app_shutdown_closes_live_streams() -> None:
    server = ForkServer()
    async with serve(server) as site:
        server.expect(UUID, USER, PASSWORD)
        ws = await site.connect()
        stream = await server.accept(UUID, timeout=2)
        await site.server.close()
        msg = await asyncio.wait_for(ws.receive(), 2)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        assert await read_all(stream) == []
