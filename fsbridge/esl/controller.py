"""The ESL controller's asyncio facade over greenswitch running in its own thread.

greenswitch is gevent based and not thread-safe, and gevent must never be monkey-patched in this
asyncio process, so the controller is split at the thread boundary. ``gthread.EslThread`` is
everything that runs in the dedicated gevent thread (the patched ``InboundESL``, the thread
target, the job queue and its async watcher, the teardown). This module is everything that runs
on the asyncio loop: the public API, the event queue, ``bgapi`` job waiters and the connection
state. It never touches a gevent object; it only calls ``EslThread``'s thread-safe methods, and
hears back through callbacks the thread schedules with ``loop.call_soon_threadsafe`` (which keeps
event order). Command results come back as ``concurrent.futures.Future`` wrapped with
``asyncio.wrap_future``.

greenswitch has no per-command timeout and no reconnect, and its reply matching is a FIFO: a
command that times out leaves its waiter first in line and every later reply would go to the
wrong caller. So a timeout is treated as a broken connection, exactly like the peer going away:
every pending command fails with EslDisconnected and ``events()`` ends. The service makes a new
controller to reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from collections.abc import AsyncIterator, Mapping, Sequence

from .gthread import CLOSED, EslThread
from .protocol import (
    EslCommandError,
    EslConnectError,
    EslDisconnected,
    EslEvent,
    bgapi_text,
    check_command,
    check_reply,
    sendmsg_text,
    subscribe_text,
)

__all__ = ["DEFAULT_EVENTS", "EslController"]

log = logging.getLogger(__name__)

DEFAULT_EVENTS: tuple[str, ...] = (
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "DTMF",
    "BACKGROUND_JOB",
    "CUSTOM",
    "mod_audio_fork::connect",
    "mod_audio_fork::connect_failed",
    "mod_audio_fork::disconnect",
    "mod_audio_fork::buffer_overrun",
    "mod_audio_fork::error",
    "mod_audio_stream::connect",
    "mod_audio_stream::disconnect",
    "mod_audio_stream::error",
)


def _first_word(command: str) -> str:
    return command.split(None, 1)[0] if command.strip() else "?"


class EslController:
    """Inbound ESL connection to FreeSWITCH with an asyncio API.

    One object is one connection: ``connect()`` once, use it, ``close()`` it. It knows nothing
    about calls. After the connection is lost (peer gone, command timeout, protocol error) every
    call raises EslDisconnected and ``events()`` ends; build a new controller to reconnect.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        events: Sequence[str] = DEFAULT_EVENTS,
    ) -> None:
        self._where = f"{host}:{port}"
        # The gevent side; it calls back into _deliver/_deliver_end on the asyncio loop only.
        self._esl = EslThread(
            host,
            port,
            password,
            command_timeout=command_timeout,
            connect_timeout=connect_timeout,
            subscribe=subscribe_text(events),
            on_event=self._deliver,
            on_end=self._deliver_end,
        )

        # asyncio-side state.
        self._state = "new"  # new | connecting | connected | closed
        self._closing = False
        self._closed = asyncio.Event()
        self._events: asyncio.Queue[EslEvent | None] = asyncio.Queue()
        self._bg_waiters: dict[str, asyncio.Future[str]] = {}
        self._end_reason: str | None = None

    def __repr__(self) -> str:
        return f"<EslController {self._where} {self._state}>"

    @property
    def connected(self) -> bool:
        return self._state == "connected" and self._esl.lost_reason is None and not self._closing

    async def connect(self) -> None:
        """Connect, authenticate and subscribe.

        Raises EslAuthError (password rejected), EslConnectError (refused, unreachable, no
        greeting within ``connect_timeout``, subscription refused).
        """
        if self._state != "new":
            raise RuntimeError("EslController.connect() runs once; make a new controller")
        self._state = "connecting"
        loop = asyncio.get_running_loop()
        ready = self._esl.start(loop)
        try:
            await asyncio.wrap_future(ready)
        except asyncio.CancelledError:
            self._esl.request_stop()
            raise
        except BaseException:
            self._state = "closed"
            await loop.run_in_executor(None, self._esl.join)
            raise
        if self._closing:
            raise EslConnectError(f"ESL controller for {self._where} closed while connecting")
        self._state = "connected"
        log.info("ESL connected to %s", self._where)

    async def api(self, command: str) -> str:
        """Run ``api <command>`` and return its output (the raw body, trailing newline kept)."""
        check_command(command)
        name = _first_word(command)
        return self._checked(await self._call(f"api {command}", name), name)

    async def bgapi(self, command: str) -> str:
        """Run ``bgapi <command>`` and wait for its BACKGROUND_JOB; returns the job's output.

        Only the command reply is bounded by ``command_timeout``; the job itself may take as
        long as it takes (wrap the call in ``asyncio.wait_for`` to bound it).
        """
        check_command(command)
        name = _first_word(command)
        job_uuid = str(uuidlib.uuid4())
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._bg_waiters[job_uuid] = waiter  # before sending: the job may finish at once
        try:
            reply = await self._call(bgapi_text(command, job_uuid), name)
            if not reply.startswith("+OK"):
                raise EslCommandError(reply, name)
            body = await waiter
        finally:
            self._bg_waiters.pop(job_uuid, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # failed by a disconnect we already reported: retrieved
            else:
                waiter.cancel()
        return self._checked(body, name)

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:
        """``sendmsg <uuid>`` with the given headers; raises EslCommandError unless ``+OK``."""
        self._checked(await self._call(sendmsg_text(uuid, headers), "sendmsg"), "sendmsg")

    async def events(self) -> AsyncIterator[EslEvent]:
        """Every subscribed event except BACKGROUND_JOB, in order; ends when the link is lost."""
        if self._state == "new":
            return
        while True:
            ev = await self._events.get()
            if ev is None:
                self._events.put_nowait(None)  # so any other reader ends too
                return
            yield ev

    async def close(self) -> None:
        """Send ``exit``, stop the thread and join it. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._esl.started:
                self._esl.request_stop()
                await asyncio.get_running_loop().run_in_executor(None, self._esl.join)
        finally:
            self._state = "closed"
            self._deliver_end(CLOSED)
            self._closed.set()
            log.info("ESL connection to %s closed", self._where)

    @staticmethod
    def _checked(reply: str, name: str) -> str:
        try:
            return check_reply(reply)
        except EslCommandError as exc:
            raise EslCommandError(exc.reply, name) from None

    async def _call(self, text: str, name: str) -> str:
        if self._state != "connected" or self._closing or self._end_reason is not None:
            raise EslDisconnected(self._esl.lost_reason or f"ESL to {self._where} is not connected")
        return await asyncio.wrap_future(self._esl.submit(text, name))

    def _deliver(self, ev: EslEvent) -> None:
        if ev.name == "BACKGROUND_JOB":
            waiter = self._bg_waiters.get(ev.headers.get("Job-UUID", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(ev.body or "")
            return  # job results are ours alone, never on the event stream
        if self._end_reason is None:
            self._events.put_nowait(ev)

    def _deliver_end(self, reason: str) -> None:
        if self._end_reason is not None:
            return
        self._end_reason = reason
        for waiter in self._bg_waiters.values():
            if not waiter.done():
                waiter.set_exception(EslDisconnected(reason))
        self._events.put_nowait(None)
