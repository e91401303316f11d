"""A local OpenAI Realtime server (GA dialect) for tests, the demo and the bench.

The shell is thin on purpose: aiohttp accepts ``/v1/realtime?model=…`` (and Azure's
``/openai/v1/realtime``), checks the key, and hands each connection to a ``SimSession`` — the
sans-I/O state machine of ``rt_session`` — then only moves text frames, keeps the ``SimClock`` and
applies transport faults (drop, delay). Everything it sends and receives is recorded per session with
the clock time, so tests assert on the truth rather than on what a client believed.

    async with RealtimeSim(replies=[Reply(audio=wav, transcript="…")]) as sim:
        ...  # connect to sim.url
        await sim.wait_for(lambda: sim.sessions and sim.sessions[0].responses)

This module never imports the service's protocol code (fsbridge.realtime etc.): one bug must not
hide on both sides of the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from fsbridge.sim import rt_errors as E
from fsbridge.sim.clock import SimClock
from fsbridge.sim.rt_conn import Connection, FaultKind, SimSession
from fsbridge.sim.rt_script import (
    FunctionCallReply,
    Reply,
    ReplyFn,
    ReplyScript,
    TranscriptFn,
    TranscriptScript,
)
from fsbridge.sim.rt_settings import CloseRequest, SimSettings
from fsbridge.sim.rt_stream import ResponseRecord, StreamSettings

__all__ = [
    "FunctionCallReply",
    "RealtimeSim",
    "Reply",
    "ResponseRecord",
    "SimSession",
    "SimSettings",
]

log = logging.getLogger("fsbridge.sim.realtime")
T = TypeVar("T")
_STREAM_FIELDS = {f.name for f in dataclasses.fields(StreamSettings)}
_SIM_FIELDS = {f.name for f in dataclasses.fields(SimSettings)}
_FAULT_ARGS: dict[str, set[str]] = {
    "drop": {"after_events"},
    "delay": {"seconds"},
    "server_error": {"when"},
    "rate_limit": {"when"},
}


class RealtimeSim:
    """The simulated Realtime GA server. Named arguments win over the same knobs in ``settings``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        clock: SimClock | None = None,
        replies: Sequence[Reply | FunctionCallReply] | ReplyFn | None = None,
        delivery_speed: float = 4.0,
        delta_ms: int = 100,
        first_delta_delay_s: float = 0.15,
        session_max_s: float = 3600.0,
        reject_beta: bool = True,
        input_transcripts: Sequence[str] | TranscriptFn | None = None,
        *,
        settings: SimSettings | None = None,
        **knobs: Any,
    ) -> None:
        if delivery_speed <= 0 or delta_ms <= 0:
            raise ValueError("delivery_speed and delta_ms must be > 0")
        unknown = set(knobs) - _STREAM_FIELDS - _SIM_FIELDS
        if unknown:
            raise TypeError(f"unknown RealtimeSim settings: {sorted(unknown)}")
        base = settings or SimSettings()
        stream = dataclasses.replace(
            base.stream,
            delivery_speed=delivery_speed,
            delta_ms=delta_ms,
            first_delta_delay_s=first_delta_delay_s,
            **{k: v for k, v in knobs.items() if k in _STREAM_FIELDS},
        )
        self.settings = dataclasses.replace(
            base,
            stream=stream,
            session_max_s=session_max_s,
            reject_beta=reject_beta,
            **{k: v for k, v in knobs.items() if k in _SIM_FIELDS and k != "stream"},
        )
        self.host = host
        self.port = port
        self._api_key = api_key
        self.clock = clock or SimClock(1.0)
        self._script = ReplyScript(replies, self.settings.exhausted)
        self._transcripts = TranscriptScript(input_transcripts)
        self.sessions: list[SimSession] = []
        self._conns: dict[int, Connection] = {}
        self._pending_faults: dict[int, list[tuple[FaultKind, dict[str, Any]]]] = {}
        self._runner: web.AppRunner | None = None
        self._change: asyncio.Future[None] | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"<RealtimeSim {self.host}:{self.port} sessions={len(self.sessions)}>"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        app.router.add_get("/openai/v1/realtime", self._handle)  # Azure GA path
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("realtime simulator listening on %s", self.url)

    async def stop(self) -> None:
        """Close every session (1001, after the events already queued), then the server."""
        live = [c for c in self._conns.values() if not c.session.closed.is_set()]
        for conn in live:
            conn.shutdown(1001, "simulator stopped")
        if live:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*(c.session.closed.wait() for c in live))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RealtimeSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def inject_fault(self, session_index: int, kind: FaultKind, **kw: Any) -> None:
        """Fault injection for session ``session_index`` (a future index applies when it connects).

        kinds: ``drop`` (now, or ``after_events=N`` more events), ``delay`` (``seconds=X`` of sim
        time added to every event from now on), ``server_error`` / ``rate_limit`` (the active
        response fails now, else the next one; ``when="next"`` forces the next one).
        """
        allowed = _FAULT_ARGS.get(kind)
        if allowed is None:
            raise ValueError(f"unknown fault kind {kind!r} (drop, delay, server_error, rate_limit)")
        if set(kw) - allowed:
            raise TypeError(f"unexpected arguments for fault {kind!r}: {sorted(set(kw) - allowed)}")
        if kind == "delay" and "seconds" not in kw:
            raise TypeError("fault 'delay' needs seconds=")
        conn = self._conns.get(session_index)
        if conn is None:
            if session_index < len(self.sessions):
                raise ValueError(f"session {session_index} is already closed")
            self._pending_faults.setdefault(session_index, []).append((kind, dict(kw)))
            return
        conn.apply_fault(kind, dict(kw))

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait (real seconds) until ``predicate()`` is truthy; re-checked on every recorded change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            if self._change is None or self._change.done():
                self._change = loop.create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await asyncio.shield(self._change)

    def _notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)

    def _key_from(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return auth[7:].strip()
        if self.settings.accept_api_key_header and request.headers.get("api-key"):
            return request.headers["api-key"].strip()
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = self._key_from(request)
        if key is None:
            return web.json_response(E.http_error_body(E.NO_KEY_MESSAGE, None), status=401)
        if self._api_key is not None and not hmac.compare_digest(
            key.encode(), self._api_key.encode()
        ):
            return web.json_response(
                E.http_error_body(E.BAD_KEY_MESSAGE, "invalid_api_key"), status=401
            )
        ws = web.WebSocketResponse(max_msg_size=32 * 1024 * 1024, timeout=2.0)
        await ws.prepare(request)
        index = len(self.sessions)
        model = request.query.get("model", "")
        session = SimSession(
            headers=CIMultiDict(request.headers),
            index=index,
            model=model,
            settings=self.settings,
            script=self._script,
            transcripts=self._transcripts,
        )
        self.sessions.append(session)
        conn = Connection(ws, session, request, self.clock, self._notify)
        self._conns[index] = conn
        for kind, kw in self._pending_faults.pop(index, []):
            conn.apply_fault(kind, kw)
        beta = request.headers.get("OpenAI-Beta", "").lower().startswith("realtime")
        now = self.clock.now()

        def opening() -> None:
            if beta and self.settings.reject_beta:
                close = CloseRequest(E.BETA_CLOSE_CODE, E.BETA_CLOSE_REASON)
                session.reject(E.BETA_DISABLED_CODE, E.BETA_DISABLED_MESSAGE, close)
            elif not model:
                msg = "Missing required parameter: 'model'."
                session.reject(
                    "missing_required_parameter",
                    msg,
                    CloseRequest(E.MODEL_ERROR_CLOSE_CODE),
                    "model",
                )
            elif not self.settings.model_ok(model):
                msg = E.model_not_found_message(model)
                session.reject(
                    E.MODEL_NOT_FOUND_CODE,
                    msg,
                    CloseRequest(E.MODEL_ERROR_CLOSE_CODE),
                    "model",
                )
            else:
                session.open(now, int(time.time() + self.settings.session_max_s))

        log.debug("realtime session %d connected (model=%s)", index, model)
        try:
            await conn.run(opening)
        finally:
            self._conns.pop(index, None)
            log.debug("realtime session %d closed (code=%s)", index, session.close_code)
        return ws
