"""RealtimeConnection against a tiny aiohttp WebSocket server on 127.0.0.1 (not the simulator).

The server records the handshake and every frame, sends ``session.created`` first, echoes
``session.update`` as ``session.updated``, and otherwise does what the test queues: send a text
or binary frame, or close with a code. That is enough to pin down the client's wire behaviour:
headers, URL, JSON framing, malformed-event handling and close codes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fsbridge.config import Profile
from fsbridge.realtime import (
    AudioDelta,
    Error,
    RealtimeClosed,
    RealtimeConnectError,
    RealtimeConnection,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    check_session,
    connect_realtime,
    input_audio_append,
    session_update,
)

KEY = "test-key-Zm9vYmFyYmF6cXV4c2VjcmV0"  # fake, never an OpenAI key
SESSION = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_test",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
}
DELTA = {
    "type": "response.output_audio.delta",
    "event_id": "event_9",
    "response_id": "resp_1",
    "item_id": "item_1",
    "output_index": 0,
    "content_index": 0,
    "delta": base64.b64encode(b"\x01\x02\x03\x04").decode(),
}


class FakeRealtime:
    """Records handshakes and frames; plays what the test queues."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.frames: list[str] = []
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.status: int | None = None  # refuse the upgrade with this HTTP status
        self.autoping = True  # False: never answer pings (a dead peer)
        self.sent: list[str] = []
        self.client_closed = asyncio.Event()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.status is not None:
            # Real servers echo a masked key in the body; the client must not surface it.
            body = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
            return web.json_response(body, status=self.status)
        ws = web.WebSocketResponse(autoping=self.autoping)
        await ws.prepare(request)
        await self._send(
            ws, json.dumps({"type": "session.created", "event_id": "event_1", "session": SESSION})
        )
        reader = asyncio.create_task(self._read(ws))
        try:
            while not reader.done():
                getter = asyncio.create_task(self.outbox.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    break
                kind, value = getter.result()
                if kind == "text":
                    await self._send(ws, value)
                elif kind == "bytes":
                    await ws.send_bytes(value)
                elif kind == "close":
                    code, reason = value
                    await ws.close(code=code, message=reason.encode())
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ws

    async def _send(self, ws: web.WebSocketResponse, text: str) -> None:
        self.sent.append(text)
        await ws.send_str(text)

    async def _read(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frames.append(msg.data)
                obj = json.loads(msg.data)
                self.received.put_nowait(obj)
                if obj.get("type") == "session.update":
                    echo = {**SESSION, **obj["session"]}
                    await self._send(
                        ws,
                        json.dumps(
                            {"type": "session.updated", "event_id": "event_2", "session": echo}
                        ),
                    )
        self.client_closed.set()

    def send(self, obj: dict[str, Any] | str) -> None:
        self.outbox.put_nowait(("text", obj if isinstance(obj, str) else json.dumps(obj)))

    def close(self, code: int, reason: str = "") -> None:
        self.outbox.put_nowait(("close", (code, reason)))


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRealtime, TestServer]]:
    server_state = FakeRealtime()
    app = web.Application()
    app.router.add_get("/v1/realtime", server_state.handler)
    app.router.add_get("/openai/v1/realtime", server_state.handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server_state, server
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


Connect = Callable[..., Awaitable[RealtimeConnection]]


@pytest.fixture
async def connect(
    fake: tuple[FakeRealtime, TestServer], http: aiohttp.ClientSession
) -> AsyncIterator[Connect]:
    """connect(**overrides) to the fake server; every connection is closed at teardown."""
    _, server = fake
    opened: list[RealtimeConnection] = []

    async def _connect(**kw: Any) -> RealtimeConnection:
        args: dict[str, Any] = {
            "url": str(server.make_url("/v1/realtime")),
            "model": "gpt-realtime",
            "api_key": KEY,
            "auth": "bearer",
            "headers": {},
            "timeout": 5.0,
        }
        args.update(kw)
        conn = await connect_realtime(http, **args)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        await conn.close()


async def recv(conn: RealtimeConnection) -> Any:
    return await asyncio.wait_for(conn.recv(), 5)


# --------------------------------------------------------------------------- handshake


async def test_bearer_auth_model_query_and_no_beta_header(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect(headers={"OpenAI-Project": "proj_123"})
    assert isinstance(await recv(conn), SessionCreated)
    (req,) = state.requests
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert "api-key" not in req.headers
    assert "OpenAI-Beta" not in req.headers
    assert req.headers["OpenAI-Project"] == "proj_123"
    assert req.query.getall("model") == ["gpt-realtime"]
    assert KEY not in str(req.url)


async def test_api_key_mode_keeps_the_existing_query(fake: Any, connect: Connect) -> None:
    state, server = fake
    url = (
        str(server.make_url("/openai/v1/realtime"))
        + "?api-version=2025-04-01-preview&deployment=rt"
    )
    conn = await connect(url=url, model="my-deployment", auth="api-key")
    assert isinstance(await recv(conn), SessionCreated)
    (req,) = state.requests
    assert req.path == "/openai/v1/realtime"
    assert req.headers["api-key"] == KEY
    assert "Authorization" not in req.headers
    assert "OpenAI-Beta" not in req.headers
    assert req.query["api-version"] == "2025-04-01-preview"
    assert req.query["deployment"] == "rt"
    assert req.query.getall("model") == ["my-deployment"]


async def test_model_argument_replaces_a_model_in_the_url(fake: Any, connect: Connect) -> None:
    state, server = fake
    await connect(url=str(server.make_url("/v1/realtime")) + "?model=old", model="gpt-realtime-2")
    assert state.requests[0].query.getall("model") == ["gpt-realtime-2"]


async def test_configured_key_overrides_auth_headers_and_none_keeps_them(
    fake: Any, connect: Connect
) -> None:
    state, _ = fake
    await connect(headers={"authorization": "Bearer stale"})
    assert state.requests[0].headers.getall("Authorization") == [f"Bearer {KEY}"]
    await connect(api_key=None, headers={"Authorization": "Bearer entra-token"})
    assert state.requests[1].headers["Authorization"] == "Bearer entra-token"


async def test_beta_header_is_refused_before_connecting(fake: Any, connect: Connect) -> None:
    state, _ = fake
    with pytest.raises(RealtimeConnectError, match="OpenAI-Beta"):
        await connect(headers={"openai-beta": "realtime=v1"})
    assert state.requests == []


def _assert_no_key(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert KEY not in text
    assert exc.__cause__ is None and exc.__context__ is None


@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "API key"), (403, "not allowed"), (404, "model"), (500, "HTTP 500")],
)
async def test_http_refusal_is_a_clear_error_without_the_key(
    fake: Any, connect: Connect, status: int, words: str
) -> None:
    state, _ = fake
    state.status = status
    with pytest.raises(RealtimeConnectError) as info:
        await connect()
    assert info.value.status == status
    assert f"HTTP {status}" in str(info.value)
    assert words in str(info.value)
    assert "gpt-realtime" in str(info.value)
    _assert_no_key(info.value)


async def test_unreachable_server(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RealtimeConnectError, match="cannot reach") as info:
        await connect_realtime(
            http,
            url=f"ws://127.0.0.1:{port}/v1/realtime",
            model="m",
            api_key=KEY,
            auth="bearer",
            headers={},
            timeout=5,
        )
    assert info.value.status is None
    _assert_no_key(info.value)


async def test_silent_server_times_out(http: aiohttp.ClientSession) -> None:
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def mute(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        accepted.set()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RealtimeConnectError, match=r"did not answer within 0\.3 s") as info:
            await connect_realtime(
                http,
                url=f"ws://127.0.0.1:{port}/v1/realtime",
                model="m",
                api_key=KEY,
                auth="bearer",
                headers={},
                timeout=0.3,
            )
        assert accepted.is_set()
        _assert_no_key(info.value)
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_bad_scheme() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(RealtimeConnectError, match="ws:// or wss://"):
            await connect_realtime(
                http,
                url="ftp://example.invalid/v1/realtime",
                model="m",
                api_key=KEY,
                auth="bearer",
                headers={},
                timeout=1,
            )


# --------------------------------------------------------------------------- events


async def test_events_round_trip_compactly(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect()
    assert isinstance(await recv(conn), SessionCreated)
    update = session_update(Profile())
    await conn.send(update)
    got = await asyncio.wait_for(state.received.get(), 5)
    assert got == update
    assert state.frames[0] == json.dumps(update, separators=(",", ":"), ensure_ascii=False)
    echoed = await recv(conn)
    assert isinstance(echoed, SessionUpdated)
    check_session(echoed.session)
    append = input_audio_append(b"\x00\x01" * 480)
    await conn.send(append)
    assert await asyncio.wait_for(state.received.get(), 5) == append
    assert conn.events_out == 2
    assert conn.bytes_out == sum(len(f.encode()) for f in state.frames)
    assert conn.events_in == 2
    assert conn.bytes_in == sum(len(s.encode()) for s in state.sent)


async def test_non_ascii_text_is_counted_in_bytes(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect()
    await recv(conn)
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Merhaba, nasılsınız?"}],
            },
        }
    )
    await asyncio.wait_for(state.received.get(), 5)
    assert "nasılsınız" in state.frames[0]  # sent as UTF-8, not \\u escapes
    assert conn.bytes_out == len(state.frames[0].encode("utf-8"))


async def test_malformed_events_are_skipped_and_counted(
    fake: Any, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = fake
    conn = await connect()
    assert isinstance(await recv(conn), SessionCreated)
    caplog.set_level(logging.DEBUG, logger="fsbridge.realtime.client")
    state.send({**DELTA, "delta": "%%% not base64 %%%"})
    state.send({**DELTA, "delta": "AAE"})
    state.send("{not json")
    state.send("[1, 2, 3]")
    state.outbox.put_nowait(("bytes", b"\x00\x01"))
    state.send({"type": "input_audio_buffer.speech_started", "event_id": "e", "item_id": "item_2"})
    state.send(DELTA)
    event = await recv(conn)
    assert event == AudioDelta("resp_1", "item_1", b"\x01\x02\x03\x04")
    assert conn.malformed == {
        "response.output_audio.delta": 2,
        "<not json>": 1,
        "<not an object>": 1,
        "<binary frame>": 1,
        "input_audio_buffer.speech_started": 1,
    }
    drops = [r for r in caplog.records if "dropping malformed" in r.getMessage()]
    assert len(drops) == 5  # once per type, not per event
    assert all(r.levelno == logging.DEBUG for r in drops)
    assert conn.events_in == 2
    # The connection still works afterwards.
    state.send(
        {
            "type": "input_audio_buffer.speech_started",
            "event_id": "e",
            "audio_start_ms": 40,
            "item_id": "item_2",
        }
    )
    assert await recv(conn) == SpeechStarted(40, "item_2")


async def test_beta_rejection_close_code_is_surfaced(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect()
    await recv(conn)
    state.send(
        {
            "type": "error",
            "event_id": "event_3",
            "error": {
                "type": "invalid_request_error",
                "code": "beta_api_shape_disabled",
                "message": "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
                "param": None,
                "event_id": None,
            },
        }
    )
    state.close(4000, "invalid_request_error.beta_api_shape_disabled")
    err = await recv(conn)
    assert isinstance(err, Error) and err.code == "beta_api_shape_disabled"
    assert await recv(conn) is None
    assert conn.close_code == 4000
    assert conn.close_reason == "invalid_request_error.beta_api_shape_disabled"
    assert conn.closed
    assert await recv(conn) is None  # stays closed
    with pytest.raises(RealtimeClosed):
        await conn.send({"type": "response.create"})


async def test_session_expiry_ends_iteration_with_1001(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect()
    state.send(
        {
            "type": "error",
            "event_id": "event_4",
            "error": {
                "type": "invalid_request_error",
                "code": "session_expired",
                "message": "Your session hit the maximum duration of 60 minutes.",
                "param": None,
                "event_id": None,
            },
        }
    )
    state.close(1001, "")
    events = [e async for e in conn]
    assert [type(e) for e in events] == [SessionCreated, Error]
    assert conn.close_code == 1001
    assert conn.close_reason is None


async def test_event_tap_sees_both_directions_and_cannot_break_the_call(
    fake: Any, connect: Connect
) -> None:
    state, _ = fake
    seen: list[tuple[str, str]] = []

    def tap(direction: str, event: dict) -> None:
        seen.append((direction, event["type"]))
        if len(seen) == 3:
            raise RuntimeError("tap bug")

    conn = await connect(on_event=tap)
    await recv(conn)
    await conn.send({"type": "response.create"})
    state.send(DELTA)
    await recv(conn)
    await conn.send({"type": "response.cancel"})  # tap raised before this: now disabled
    assert await asyncio.wait_for(state.received.get(), 5) == {"type": "response.create"}
    assert await asyncio.wait_for(state.received.get(), 5) == {"type": "response.cancel"}
    assert seen == [("in", "session.created"), ("out", "response.create"), ("in", DELTA["type"])]


async def test_heartbeat_detects_a_dead_peer(fake: Any, connect: Connect) -> None:
    state, _ = fake
    state.autoping = False  # the server never answers pings
    conn = await connect(heartbeat=0.2)
    assert isinstance(await recv(conn), SessionCreated)
    assert await recv(conn) is None  # within the 5 s guard: heartbeat + pong wait is 0.3 s
    assert conn.close_code is not None and conn.close_code != 1000
    print("dead peer:", conn.close_code, conn.close_reason)


async def test_client_close_is_clean_and_idempotent(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect()
    await recv(conn)
    await conn.close()
    await conn.close()
    assert conn.closed
    await asyncio.wait_for(state.client_closed.wait(), 5)
    assert await recv(conn) is None
    with pytest.raises(RealtimeClosed):
        await conn.send({"type": "response.create"})
    assert "closed" in repr(conn) and KEY not in repr(conn)


async def test_close_while_another_task_waits_in_recv(fake: Any, connect: Connect) -> None:
    state, _ = fake
    conn = await connect()
    await recv(conn)
    waiting = asyncio.create_task(conn.recv())
    try:
        await asyncio.sleep(0)  # let it block in receive()
        await asyncio.wait_for(conn.close(), 5)
        assert await asyncio.wait_for(waiting, 5) is None
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    assert conn.closed
    await asyncio.wait_for(state.client_closed.wait(), 5)
