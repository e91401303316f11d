"""One call's Realtime side across sessions: renewal before the 60-minute limit, reconnects.

A Realtime session lasts at most 60 minutes (then ``session_expired`` and close 1001), and a socket
can drop at any time. A phone call must not notice either. ``RealtimeLink`` owns the call's current
connection and replaces it:

* **renewal** (planned): after ``renew_after_s``, at a turn boundary (nothing playing, no response,
  the caller silent), open a new session, seed it with the conversation so far as text items, and
  switch; the old one is closed by us.
* **reconnect** (unplanned): the socket closed under us (expiry, drop, server restart) — open a new
  session at once, seeded the same way; the caller hears at most a short pause. Only if that fails
  does the call give up (apology and hangup, as before).

The uplink never stops reading fork frames: appends go to the current session; while there is no
live one they are kept (a few seconds), then replayed into the new session, after the last few
hundred milliseconds sent to the old one, so a word begun at the switch reaches the new VAD whole.
The dispatcher iterates :meth:`events`, which runs across sessions and marks each switch with a
:class:`SessionSwitched` record so the call can drop per-session state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from ..config import Profile, RealtimeConfig
from ..realtime import protocol as rtp
from ..realtime.client import (
    EventTap,
    RealtimeClosed,
    RealtimeConnection,
    RealtimeError,
    connect_realtime,
)

__all__ = ["OPEN_ERRORS", "RealtimeLink", "SessionSwitched", "open_session"]

log = logging.getLogger("fsbridge.call")

Opener = Callable[[], Awaitable[RealtimeConnection]]
Seeder = Callable[[int], tuple[list[dict], int]]  # from turn index -> (events, next index)
OPEN_ERRORS = (RealtimeError, TimeoutError, OSError, aiohttp.ClientError)


async def open_session(
    http: aiohttp.ClientSession,
    rc: RealtimeConfig,
    profile: Profile,
    *,
    model: str,
    tools: list[dict] | None,
    on_event: EventTap | None = None,
) -> RealtimeConnection:
    """Connect, configure the session for ``profile`` and check what the server echoed.

    Raises one of :data:`OPEN_ERRORS` (never leaving a socket open) if the session is not ready
    within ``session_ready_timeout_s``.
    """
    key = rc.api_key.get_secret_value() if rc.api_key else None
    conn = await connect_realtime(
        http,
        url=rc.url,
        model=model,
        api_key=key,
        auth=rc.auth,
        headers=rc.headers,
        timeout=rc.connect_timeout_s,
        heartbeat=rc.heartbeat_s,
        on_event=on_event,
    )
    try:
        async with asyncio.timeout(rc.session_ready_timeout_s):
            await _expect(conn, rtp.SessionCreated)
            await conn.send(rtp.session_update(profile, tools=tools))
            updated = await _expect(conn, rtp.SessionUpdated)
        rtp.check_session(updated.session)
    except BaseException:
        await conn.close()
        raise
    log.info("realtime session ready")
    return conn


async def _expect(conn: RealtimeConnection, kind: type) -> Any:
    while True:
        ev = await conn.recv()
        if ev is None:
            raise RealtimeError(
                f"realtime closed the session (code {conn.close_code}: {conn.close_reason})"
            )
        if isinstance(ev, kind):
            return ev
        if isinstance(ev, rtp.Error):
            raise RealtimeError(f"realtime refused the session: {ev.code}: {ev.message}")


@dataclass(frozen=True)
class SessionSwitched:
    """The dispatcher's marker: events from here on come from session ``index``."""

    reason: Literal["renewed", "reconnected"]
    index: int
    old_close_code: int | None = None


class RealtimeLink:
    def __init__(
        self,
        first: RealtimeConnection,
        *,
        opener: Opener,
        seed: Seeder,
        renew_after_s: float,
        reconnect_attempts: int = 2,
        reconnect_backoff_s: float = 0.25,
        backlog_events: int = 100,
        replay_events: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn: RealtimeConnection = first
        self.index = 0
        self.renewals = 0
        self.reconnects = 0
        self.expired = 0  # session_expired errors seen
        self._opener = opener
        self._seed = seed
        self.renew_after_s = renew_after_s
        self._attempts = max(1, reconnect_attempts)
        self._backoff = reconnect_backoff_s
        self._clock = clock
        self.opened_at = clock()
        self._lock = asyncio.Lock()  # one switch at a time (renewal vs reconnect)
        self._backlog: deque[dict] = deque(maxlen=backlog_events)  # appends with no live session
        self._recent: deque[dict] = deque(maxlen=replay_events)  # the last appends sent
        self._closing = False

    @property
    def live(self) -> bool:
        return not self._closing and not self.conn.closed

    # -- sending ---------------------------------------------------------------------------------
    async def send(self, event: dict) -> None:
        """Send a control event to the current session; dropped if it is gone (being replaced:
        a cancel or truncate for a dead session means nothing to the next one)."""
        try:
            await self.conn.send(event)
        except RealtimeClosed:
            log.debug("realtime %s dropped: the session is closed", event.get("type"))

    async def send_audio(self, event: dict) -> None:
        """Append caller audio: never fails, never blocks on a reconnect."""
        if self.conn.closed:
            self._backlog.append(event)
            return
        try:
            await self.conn.send(event)
        except RealtimeClosed:
            self._backlog.append(event)
            return
        self._recent.append(event)

    # -- receiving -------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[rtp.ServerEvent | SessionSwitched]:
        """Server events of whatever session is current; ends only when a reconnect failed."""
        while True:
            conn = self.conn
            while (ev := await conn.recv()) is not None:
                if conn is not self.conn:
                    break  # switched away: the old session's last words do not matter
                if isinstance(ev, rtp.Error) and ev.code == "session_expired":
                    self.expired += 1
                    log.info("realtime session %d expired; replacing it", self.index)
                yield ev
            if self._closing:
                return
            if conn is not self.conn:
                yield SessionSwitched("renewed", self.index)
                continue
            code = conn.close_code
            log.warning(
                "realtime session %d closed under us (code %s); reconnecting", self.index, code
            )
            if not await self._reconnect(conn):
                return
            yield SessionSwitched("reconnected", self.index, code)

    # -- switching -------------------------------------------------------------------------------
    async def _open_seeded(self) -> tuple[RealtimeConnection, int]:
        conn = await self._opener()
        try:
            events, upto = self._seed(0)
            for event in events:
                await conn.send(event)
        except BaseException:
            await conn.close()
            raise
        return conn, upto

    async def _reconnect(self, dead: RealtimeConnection) -> bool:
        async with self._lock:
            if self.conn is not dead and not self.conn.closed:
                return True  # a renewal switched while we waited for the lock
            for attempt in range(1, self._attempts + 1):
                try:
                    new, _ = await self._open_seeded()
                    break
                except OPEN_ERRORS as exc:
                    log.warning("realtime reconnect %d/%d failed: %s", attempt, self._attempts, exc)
                    if attempt < self._attempts:
                        await asyncio.sleep(self._backoff * attempt)
            else:
                return False
            self._install(new)
            self.reconnects += 1
            replay = list(self._recent) + list(self._backlog)
            self._backlog.clear()
            self._recent.clear()
        await self._replay(new, replay)
        log.info("realtime reconnected", extra={"fields": {"session": self.index}})
        return True

    def _install(self, new: RealtimeConnection) -> None:
        self.conn = new
        self.index += 1
        self.opened_at = self._clock()

    async def _replay(self, conn: RealtimeConnection, events: list[dict]) -> None:
        for event in events:
            try:
                await conn.send(event)
            except RealtimeClosed:
                return
            self._recent.append(event)

    async def run_renewal(self, at_boundary: Callable[[], bool], poll_s: float = 0.05) -> None:
        """The planned rollover, forever: one renewal per ``renew_after_s`` of session age."""
        while True:
            await asyncio.sleep(max(0.0, self.opened_at + self.renew_after_s - self._clock()))
            if self._clock() < self.opened_at + self.renew_after_s:
                continue  # a reconnect made a fresh session meanwhile
            await self._wait_for(at_boundary, poll_s)
            try:
                await self._renew(at_boundary, poll_s)
            except OPEN_ERRORS as exc:
                log.warning("realtime renewal failed (%s); retrying in 30 s", exc)
                self.opened_at = self._clock() - self.renew_after_s + 30.0

    async def _wait_for(self, cond: Callable[[], bool], poll_s: float) -> None:
        # Polled, not evented: it happens once an hour for a few seconds at most.
        while not cond():  # noqa: ASYNC110 - the condition spans several objects
            await asyncio.sleep(poll_s)

    async def _renew(self, at_boundary: Callable[[], bool], poll_s: float) -> None:
        async with self._lock:
            old = self.conn
            if old.closed:
                return  # the dispatcher is reconnecting; that makes a fresh session anyway
            new, upto = await self._open_seeded()
            try:
                await self._wait_for(lambda: at_boundary() or old.closed, poll_s)
                events, upto = self._seed(upto)  # turns that ended while the new one opened
                for event in events:
                    await new.send(event)
            except BaseException:
                await new.close()
                raise
            replay = list(self._recent)
            self._recent.clear()
            self._install(new)  # from here on, appends go to the new session
            self.renewals += 1
        await self._replay(new, replay)
        log.info(
            "realtime session renewed",
            extra={"fields": {"session": self.index, "seeded_turns": upto}},
        )
        with contextlib.suppress(Exception):
            await old.close()  # ends the dispatcher's read of it; it then moves to the new one

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self.conn.close()
