"""The thin WebSocket shell around :mod:`fsbridge.realtime.protocol` (aiohttp, GA dialect).

It opens ``<url>?model=<model>`` with the API key in a header (never in the URL, which ends up in
logs), moves JSON text frames and nothing else. No ``OpenAI-Beta`` header is ever sent: that
header selects the retired beta dialect and the server answers it with close code 4000.
Handshake failures become :class:`RealtimeConnectError` with the HTTP status and an operator's
message; the key never appears in it, not even in a chained exception. A malformed server event
is counted and dropped instead of ending the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from http import HTTPStatus
from typing import Any, Literal

import aiohttp
from yarl import URL

from fsbridge.realtime.protocol import (
    RealtimeError,
    RealtimeProtocolError,
    ServerEvent,
    parse_server_event,
)

__all__ = [
    "EventTap",
    "RealtimeClosed",
    "RealtimeConnectError",
    "RealtimeConnection",
    "connect_realtime",
]

log = logging.getLogger(__name__)

EventTap = Callable[[Literal["in", "out"], dict], None]
"""Called with ("out", event) before each send and ("in", event) for each decoded frame."""

_Logger = logging.Logger | logging.LoggerAdapter

_STATUS_HINTS = {
    401: "the server refused the API key (check realtime.api_key / OPENAI_API_KEY)",
    403: "the key is not allowed to use this model or endpoint",
    404: "no Realtime endpoint or model there (check realtime.url and the model name)",
    429: "rate limited or out of quota",
}


class RealtimeConnectError(RealtimeError):
    """The WebSocket handshake failed; ``status`` is the HTTP status, or None if unreachable."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RealtimeClosed(RealtimeError):
    """A send on a connection that is already closed (the peer hung up or we closed it)."""


def _where(url: URL) -> str:
    """The URL for messages: origin and path only (a query could hold a credential)."""
    return str(url.with_query(None).with_fragment(None))


def _headers(
    api_key: str | None, auth: Literal["bearer", "api-key"], extra: Mapping[str, str] | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (extra or {}).items():
        if name.lower() == "openai-beta":
            raise RealtimeConnectError(
                "realtime.headers contains OpenAI-Beta: that selects the retired beta dialect "
                "(the server closes such sessions with code 4000); remove it"
            )
        out[name] = value
    if api_key:
        for name in [n for n in out if n.lower() in ("authorization", "api-key")]:
            del out[name]
        if auth == "api-key":
            out["api-key"] = api_key
        else:
            out["Authorization"] = f"Bearer {api_key}"
    return out


async def connect_realtime(
    http: aiohttp.ClientSession,
    *,
    url: str,
    model: str,
    api_key: str | None,
    auth: Literal["bearer", "api-key"] = "bearer",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    heartbeat: float | None = 20.0,
    close_timeout: float = 2.0,
    on_event: EventTap | None = None,
    logger: _Logger | None = None,
) -> RealtimeConnection:
    """Open a GA Realtime session socket; raises :class:`RealtimeConnectError` on failure.

    ``model`` replaces any ``model`` already in the URL's query; other query parameters (Azure's
    ``api-version``, ``deployment``) are kept. ``heartbeat`` pings the server every so many
    seconds and closes the socket when a pong is missing (a dead peer otherwise looks like a
    silent model). ``timeout`` bounds the whole handshake.
    """
    target = URL(url)
    if target.scheme not in ("ws", "wss", "http", "https"):
        raise RealtimeConnectError(f"realtime.url must be ws:// or wss://, got {_where(target)!r}")
    target = target.update_query(model=model)
    hdrs = _headers(api_key, auth, headers)
    where = f"{_where(target)} (model {model!r})"
    failure: RealtimeConnectError | None = None
    try:
        async with asyncio.timeout(timeout):
            ws = await http.ws_connect(
                target,
                headers=hdrs,
                max_msg_size=0,  # conversation.item.retrieved can carry a whole reply's audio
                heartbeat=heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=close_timeout),
            )
    except aiohttp.WSServerHandshakeError as exc:
        hint = _STATUS_HINTS.get(exc.status, "the server did not accept the WebSocket upgrade")
        try:
            phrase = f" {HTTPStatus(exc.status).phrase}"
        except ValueError:
            phrase = ""
        failure = RealtimeConnectError(
            f"Realtime handshake with {where} failed: HTTP {exc.status}{phrase}: {hint}",
            status=exc.status,
        )
    except TimeoutError:
        failure = RealtimeConnectError(
            f"Realtime server {where} did not answer within {timeout:g} s"
        )
    except (aiohttp.ClientError, OSError) as exc:
        detail = str(exc).replace(str(target), _where(target))  # no query string in messages
        failure = RealtimeConnectError(
            f"cannot reach Realtime server {where}: {type(exc).__name__}: {detail}"
        )
    if failure is not None:
        # Raised outside the except block so the aiohttp error (whose request_info holds the
        # headers, i.e. the key) is not kept as __context__ and cannot reach a traceback.
        raise failure
    return RealtimeConnection(ws, on_event=on_event, logger=logger or log)


class RealtimeConnection:
    """One Realtime session socket: send client events, receive parsed server events.

    Counters (``events_in/out``, ``bytes_in/out``, ``malformed``) are plain attributes for the
    metrics and the per-call summary. After :meth:`recv` returned None, ``close_code`` and
    ``close_reason`` say why (1000 normal, 1001 session expiry, 4000 beta rejection, 1006 lost).
    """

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        on_event: EventTap | None = None,
        logger: _Logger = log,
    ) -> None:
        self._ws = ws
        self._tap = on_event
        self._log = logger
        self._closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.events_in = 0
        self.events_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.malformed: Counter[str] = Counter()

    @property
    def closed(self) -> bool:
        return self._closed or self._ws.closed

    async def send(self, event: dict) -> None:
        """Send one client event as a compact JSON text frame."""
        if self.closed:
            raise RealtimeClosed(f"Realtime connection is closed (code {self.close_code})")
        self._emit("out", event)
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        try:
            await self._ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise RealtimeClosed(f"Realtime connection lost while sending: {exc}") from None
        self.events_out += 1
        self.bytes_out += _utf8_len(text)

    async def recv(self) -> ServerEvent | None:
        """The next well-formed server event, or None once the socket is closed."""
        while not self._closed:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                event = self._decode(msg.data)
                if event is not None:
                    return event
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self.bytes_in += len(msg.data)
                self._drop("<binary frame>", "the Realtime protocol has text frames only")
            elif msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                self._finish(msg)
        return None

    def __aiter__(self) -> AsyncIterator[ServerEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ServerEvent]:
        while (event := await self.recv()) is not None:
            yield event

    async def close(self) -> None:
        """Close the socket (normal closure); safe to call more than once."""
        if not self._ws.closed:
            await self._ws.close()
        if not self._closed:
            self._closed = True
            if self.close_code is None:
                self.close_code = self._ws.close_code
            self._log.debug("realtime connection closed by us (code %s)", self.close_code)

    async def __aenter__(self) -> RealtimeConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = f"closed code={self.close_code}" if self.closed else "open"
        return (
            f"RealtimeConnection({state}, in={self.events_in}/{self.bytes_in}B, "
            f"out={self.events_out}/{self.bytes_out}B, malformed={sum(self.malformed.values())})"
        )

    # internals ----------------------------------------------------------------------------
    def _decode(self, data: str) -> ServerEvent | None:
        self.bytes_in += _utf8_len(data)
        try:
            obj: Any = json.loads(data)
        except ValueError:
            self._drop("<not json>", "the frame is not JSON")
            return None
        if not isinstance(obj, dict):
            self._drop("<not an object>", f"the frame is a JSON {type(obj).__name__}")
            return None
        self._emit("in", obj)
        try:
            event = parse_server_event(obj)
        except RealtimeProtocolError as exc:
            self._drop(exc.event_type, str(exc))
            return None
        self.events_in += 1
        return event

    def _drop(self, event_type: str, why: str) -> None:
        self.malformed[event_type] += 1
        if self.malformed[event_type] == 1:  # once per type: a broken stream must not flood logs
            self._log.debug("dropping malformed Realtime event (%s): %s", event_type, why)

    def _finish(self, msg: aiohttp.WSMessage) -> None:
        self._closed = True
        if msg.type is aiohttp.WSMsgType.CLOSE:
            self.close_code = msg.data if isinstance(msg.data, int) else self._ws.close_code
            self.close_reason = msg.extra or None
        else:
            self.close_code = self._ws.close_code
            exc = self._ws.exception()
            self.close_reason = f"{type(exc).__name__}: {exc}" if exc else None
        self._log.info(
            "realtime connection closed: code %s%s",
            self.close_code,
            f" ({self.close_reason})" if self.close_reason else "",
        )

    def _emit(self, direction: Literal["in", "out"], event: dict) -> None:
        if self._tap is None:
            return
        try:
            self._tap(direction, event)
        except Exception:  # a trace hook must never break the call
            self._log.exception("realtime event tap failed; tap disabled for this connection")
            self._tap = None


def _utf8_len(text: str) -> int:
    # isascii() is O(1) in CPython; JSON from the server is ASCII except for transcripts.
    return len(text) if text.isascii() else len(text.encode("utf-8"))
