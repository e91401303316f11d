"""The aiohttp endpoint mod_audio_fork (or mod_audio_stream) streams caller audio to.

``GET /fork/{uuid}`` upgrades to a WebSocket after checking the per-call one-time Basic
credentials that ``expect()`` registered. The aiohttp handler owns the socket: it reads every
message, files binary audio into the stream's queue and text into ``metadata``, and returns only
when the stream is over. The call side gets a ForkStream from ``accept()`` and reads
``frames()``; it never touches the socket except to ``close()`` it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from .protocol import (
    MAX_FRAME_BYTES,
    SUBPROTOCOL,
    credentials_match,
    frame_error,
    parse_basic_auth,
    split_text_messages,
)

__all__ = ["ForkServer", "ForkServerStats", "ForkStream"]

log = logging.getLogger(__name__)

# mod_audio_fork builds its Authorization header in a 128-byte buffer; longer credentials
# silently send no header at all (reference/mod-audio-fork.md §1.5). Fail loudly instead.
MAX_CREDENTIAL_CHARS = 89
_MAX_METADATA = 64  # text messages kept per stream; mod_audio_fork sends one or two


class ForkStream:
    """One live fork connection: binary L16 payloads in arrival order, plus the text messages.

    Counters (``frames_received``, ``bytes_received``, ``frames_dropped``, ``empty_frames``,
    ``text_messages``) are plain ints for metrics; nothing is logged per frame.
    """

    def __init__(
        self,
        uuid: str,
        subprotocol: str | None,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        max_frame_bytes: int,
        max_queued_frames: int,
        close_timeout: float,
    ) -> None:
        self.uuid = uuid
        self.subprotocol = subprotocol
        self.metadata: list[str] = []
        self.peer: str | None = request.remote
        self.started = time.monotonic()
        self.frames_received = 0
        self.bytes_received = 0
        self.frames_dropped = 0
        self.empty_frames = 0
        self.text_messages = 0
        self.shutdown_requested = False  # an empty binary frame: mod_audio_fork graceful-shutdown
        self.close_code: int | None = None
        self._ws = ws
        self._request = request
        self._max_frame = max_frame_bytes
        self._max_queued = max_queued_frames
        self._close_timeout = close_timeout
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._finished = asyncio.Event()
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"<ForkStream {self.uuid} {'live' if self.live else 'ended'}>"

    @property
    def live(self) -> bool:
        return not self._finished.is_set()

    async def frames(self) -> AsyncIterator[bytes]:
        """Binary payloads as they arrived (any length, odd too) until the peer closes."""
        queue = self._queue
        while True:
            item = await queue.get()
            if item is None:
                queue.put_nowait(None)  # a later frames() call ends at once too
                return
            yield item

    async def close(self, code: int = 1000) -> None:
        """Close the WebSocket (1000 by default) and wait for the handler to finish."""
        if self._finished.is_set():
            return
        try:
            await self._ws.close(code=code)
        except Exception as exc:  # the peer may already be gone
            log.debug("fork %r close: %s", self.uuid, exc)
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._finished.wait()
        except TimeoutError:
            self._abort()

    def _abort(self) -> None:
        """Drop the connection without a close handshake (used when nobody owns the stream)."""
        transport = self._request.transport
        if transport is not None:
            transport.close()

    # Handler side ---------------------------------------------------------------------------

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _on_binary(self, data: bytes) -> None:
        size = len(data)
        if not size:
            self.empty_frames += 1
            self.shutdown_requested = True
            return
        self.frames_received += 1
        self.bytes_received += size
        problem = frame_error(size, max_bytes=self._max_frame)
        if problem is not None:
            self.frames_dropped += 1
            self._warn_once("size", "fork %r: %s; dropping such frames", self.uuid, problem)
            return
        if self._queue.qsize() >= self._max_queued:
            self.frames_dropped += 1
            self._warn_once(
                "queue",
                "fork %r: reader is %d frames behind; dropping",
                self.uuid,
                self._max_queued,
            )
            return
        self._queue.put_nowait(data if type(data) is bytes else bytes(data))

    def _on_text(self, text: str) -> None:
        self.text_messages += 1
        for piece in split_text_messages(text):
            if len(self.metadata) >= _MAX_METADATA:
                self._warn_once("text", "fork %r: too many text messages; dropping", self.uuid)
                return
            self.metadata.append(piece)

    def _finish(self, close_code: int | None) -> None:
        self.close_code = close_code
        self._queue.put_nowait(None)
        self._finished.set()


@dataclass
class ForkServerStats:
    accepted: int = 0
    unauthorized: int = 0
    conflicts: int = 0
    bad_requests: int = 0


@dataclass
class _Slot:
    credentials: tuple[str, str] | None  # None once used
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    stream: ForkStream | None = None
    forgotten: bool = False


class ForkServer:
    """Routes fork WebSockets to the calls that expect them."""

    def __init__(
        self,
        *,
        path: str = "/fork/{uuid}",
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_queued_frames: int = 1500,
        ws_max_msg_size: int = 16 * 1024 * 1024,
        heartbeat: float | None = None,
        close_timeout: float = 5.0,
        max_credential_chars: int | None = MAX_CREDENTIAL_CHARS,
    ) -> None:
        """``max_queued_frames`` (default 30 s of 20 ms frames) bounds memory if a reader
        stalls; beyond it frames are dropped and counted. Frames over ``max_frame_bytes`` are
        dropped and counted; messages over ``ws_max_msg_size`` make aiohttp close the socket
        (1009), which bounds what one peer can make us buffer."""
        self._path = path
        self._max_frame = max_frame_bytes
        self._max_queued = max_queued_frames
        self._ws_max = ws_max_msg_size
        self._heartbeat = heartbeat
        self._close_timeout = close_timeout
        self._max_cred = max_credential_chars
        self._slots: dict[str, _Slot] = {}
        self._live: set[ForkStream] = set()
        self.stats = ForkServerStats()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self._path, self._handle, allow_head=False)
        app.on_shutdown.append(self._on_shutdown)

    def expect(self, uuid: str, username: str, password: str) -> None:
        """Allow one fork connection for ``uuid`` with these Basic credentials."""
        if not username or not password or ":" in username:
            raise ValueError("fork credentials need a user without ':' and a password")
        if self._max_cred is not None and len(username) + len(password) > self._max_cred:
            raise ValueError(
                f"fork credentials longer than {self._max_cred} characters together: "
                "mod_audio_fork would silently send no Authorization header"
            )
        old = self._slots.get(uuid)
        if old is not None:
            if old.stream is not None and old.stream.live:
                raise RuntimeError(f"a fork for {uuid} is connected; forget() it first")
            self._drop(old)
        self._slots[uuid] = _Slot((username, password))

    async def accept(self, uuid: str, timeout: float) -> ForkStream:
        """The stream once the fork connected; asyncio.TimeoutError if it did not in time."""
        slot = self._slots.get(uuid)
        if slot is None:
            raise KeyError(f"no fork expected for {uuid!r}; call expect() first")
        async with asyncio.timeout(timeout):
            await slot.connected.wait()
        if slot.forgotten or slot.stream is None:
            raise KeyError(f"the fork for {uuid!r} was forgotten")
        return slot.stream

    def forget(self, uuid: str) -> None:
        """Drop everything for ``uuid``: unused credentials, and a stream still connected."""
        slot = self._slots.pop(uuid, None)
        if slot is not None:
            self._drop(slot)

    async def close(self) -> None:
        """Close every live stream with 1001 (going away); used at shutdown."""
        await asyncio.gather(*(s.close(code=1001) for s in list(self._live)))

    @property
    def live_streams(self) -> int:
        return len(self._live)

    def _drop(self, slot: _Slot) -> None:
        slot.forgotten = True
        slot.credentials = None
        slot.connected.set()  # wakes a waiting accept(), which then raises KeyError
        if slot.stream is not None and slot.stream.live:
            slot.stream._abort()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.Response(
            status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="fork"'}
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        slot = self._slots.get(uuid)
        if slot is None:
            self.stats.unauthorized += 1
            log.warning("fork connection for unknown call %r refused (401)", uuid)
            return self._unauthorized()
        if slot.stream is not None and slot.stream.live:
            self.stats.conflicts += 1
            log.warning("second fork connection for %r refused (409)", uuid)
            return web.Response(status=409, text="a fork for this call is already connected\n")
        expected = slot.credentials
        given = parse_basic_auth(request.headers.get("Authorization"))
        if expected is None or not credentials_match(expected, given):
            self.stats.unauthorized += 1
            why = "credentials already used" if expected is None else "wrong credentials"
            if given is None:
                why = "no credentials"
            log.warning("fork connection for %r refused (401): %s", uuid, why)
            return self._unauthorized()

        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,), max_msg_size=self._ws_max, heartbeat=self._heartbeat
        )
        if not ws.can_prepare(request).ok:
            self.stats.bad_requests += 1
            return web.Response(status=400, text="expected a WebSocket upgrade\n")
        slot.credentials = None  # one-time: consumed before the first await
        try:
            await ws.prepare(request)
        except BaseException:
            if self._slots.get(uuid) is slot and not slot.forgotten:
                slot.credentials = expected
            raise
        stream = ForkStream(
            uuid,
            ws.ws_protocol,
            ws,
            request,
            max_frame_bytes=self._max_frame,
            max_queued_frames=self._max_queued,
            close_timeout=self._close_timeout,
        )
        slot.stream = stream
        self._live.add(stream)
        slot.connected.set()
        self.stats.accepted += 1
        log.info("fork connected for %r (subprotocol %s)", uuid, ws.ws_protocol or "none")
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    stream._on_binary(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    stream._on_text(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    log.warning("fork %r: WebSocket error: %s", uuid, ws.exception())
                    break
        finally:
            stream._finish(ws.close_code)
            self._live.discard(stream)
            log.info(
                "fork ended for %r: code %s, %d frames, %d bytes, %d dropped, %.1f s",
                uuid,
                ws.close_code,
                stream.frames_received,
                stream.bytes_received,
                stream.frames_dropped,
                time.monotonic() - stream.started,
            )
        return ws
