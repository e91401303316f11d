"""The I/O side of one simulated connection: frames in and out, timers, transport faults.

``Connection`` moves text frames between an aiohttp WebSocket and its ``SimSession`` (the sans-I/O
``SessionCore`` plus what the shell records), runs the session's timers on the ``SimClock`` and
applies the transport faults (drop now / after N events, delay every event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from fsbridge.sim.clock import SimClock
from fsbridge.sim.rt_session import SessionCore
from fsbridge.sim.rt_settings import CloseRequest, Outgoing

__all__ = ["Connection", "FaultKind", "SimSession"]

FaultKind = Literal["drop", "server_error", "rate_limit", "delay"]
log = logging.getLogger("fsbridge.sim.realtime")


class SimSession(SessionCore):
    """One connection's state and recorded truth (what tests read)."""

    def __init__(self, *, headers: CIMultiDict[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.headers = headers  # the handshake headers, for auth checks (never logged)
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        return f"<SimSession #{self.index} {self.session_id} model={self.model} closed={self.closed.is_set()}>"

    def sent_types(self) -> list[str]:
        return [ev["type"] for _, ev in self.sent]

    def received_types(self) -> list[str]:
        return [str(ev.get("type")) for _, ev in self.received]


class Connection:
    """Moves frames between one WebSocket and its SimSession; owns the writer and timer tasks."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        session: SimSession,
        request: web.Request,
        clock: SimClock,
        notify: Callable[[], None],
    ) -> None:
        self.ws = ws
        self.session = session
        self._transport = request.transport
        self._clock = clock
        self._notify = notify
        self._queue: asyncio.Queue[tuple[float, Outgoing]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self.drop_after: int | None = None
        self.delay_s = 0.0
        self._close_queued = False

    def flush(self, *, wake: bool = True) -> None:
        """Queue the session's new events for the writer; ``wake`` re-arms the timer task."""
        now = self._clock.now()
        for item in self.session.take_outbox():
            self._close_queued |= isinstance(item, CloseRequest)
            self._queue.put_nowait((now, item))
        if wake:
            self._wake.set()

    def shutdown(self, code: int, reason: str) -> None:
        """Server-side close: queued behind what the session already sent."""
        self.session.close(CloseRequest(code, reason))
        self.flush()

    def abort(self) -> None:
        """Drop the socket without a close frame (what a dead network looks like)."""
        if self.session.close_code is None:
            self.session.close_code = 1006
        self.session.ended = True
        if self._transport is not None:
            self._transport.abort()

    def apply_fault(self, kind: FaultKind, kw: dict[str, Any]) -> None:
        if kind == "drop":
            after = kw.pop("after_events", None)
            if after is None or after <= 0:
                self.abort()
            else:
                self.drop_after = int(after)
        elif kind == "delay":
            self.delay_s = float(kw.pop("seconds"))
        elif kind in ("server_error", "rate_limit"):
            self.session.fail_response(self._clock.now(), kind, when=kw.pop("when", "auto"))
            self.flush()
        else:
            raise ValueError(f"unknown fault kind {kind!r} (drop, delay, server_error, rate_limit)")
        if kw:
            raise TypeError(f"unexpected arguments for fault {kind!r}: {sorted(kw)}")

    async def run(self, opening: Callable[[], None]) -> None:
        writer = asyncio.create_task(self._writer(), name=f"rt-sim-writer-{self.session.index}")
        timers = asyncio.create_task(self._timers(), name=f"rt-sim-timers-{self.session.index}")
        try:
            opening()
            self.flush()
            async for msg in self.ws:
                now = self._clock.now()
                try:
                    if msg.type == WSMsgType.TEXT:
                        self.session.handle_text(msg.data, now)
                    elif msg.type == WSMsgType.BINARY:
                        self.session.handle_binary(msg.data, now)
                    else:
                        break
                except Exception:  # a simulator bug: tell the client loudly, keep the process
                    log.exception("realtime simulator failed on a client event")
                    self.session.crash()
                self.flush()
                self._notify()
        finally:
            timers.cancel()
            if not writer.done() and self._close_queued and self.session.close_code != 1006:
                with contextlib.suppress(TimeoutError, Exception):
                    async with asyncio.timeout(2.0):
                        await asyncio.shield(writer)
            writer.cancel()
            for task in (writer, timers):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.session.close_code is None:
                self.session.close_code = (
                    self.ws.close_code if self.ws.close_code is not None else 1006
                )
            self.session.ended = True
            self.session.closed.set()
            self._notify()

    async def _writer(self) -> None:
        while True:
            emitted, item = await self._queue.get()
            if self.delay_s > 0:
                await self._clock.sleep_until(emitted + self.delay_s)
            if isinstance(item, CloseRequest):
                self.session.close_code, self.session.close_reason = item.code, item.reason
                await self.ws.close(code=item.code, message=item.reason.encode())
                return
            if self.drop_after is not None and self.drop_after <= 0:
                self.abort()
                return
            try:
                await self.ws.send_str(json.dumps(item))
            except (ConnectionError, RuntimeError):
                return
            self.session.sent.append((self._clock.now(), item))
            self._notify()
            if self.drop_after is not None:
                self.drop_after -= 1
                if self.drop_after <= 0:
                    self.abort()
                    return

    async def _timers(self) -> None:
        """Sleep until the session's next deadline, or until new input may have changed it."""
        loop = asyncio.get_running_loop()
        while not self.session.ended:
            self._wake.clear()
            deadline = self.session.next_deadline()
            when = (
                None
                if deadline is None
                else loop.time() + max(0.0, self._clock.real_deadline(deadline) - time.monotonic())
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(when):
                    await self._wake.wait()
            self.session.on_timer(self._clock.now())
            self.flush(wake=False)
            self._notify()
