"""The ESL controller: greenswitch in one dedicated thread with its own gevent hub.

greenswitch is gevent based and not thread-safe, and gevent must never be monkey-patched in this
asyncio process. So one OS thread owns a gevent hub and the ``InboundESL``; the asyncio side never
touches either (calling greenswitch from another thread raises LoopExit). The two sides meet in a
few thread-safe places only:

* asyncio → gevent: jobs go onto a ``deque`` and a ref'd ``hub.loop.async_()`` watcher is poked;
  its callback (in the hub) spawns one greenlet per job. Results come back through
  ``concurrent.futures.Future`` + ``asyncio.wrap_future``.
* gevent → asyncio: greenswitch's event handlers only call ``loop.call_soon_threadsafe``, which
  keeps event order.

greenswitch has no per-command timeout and no reconnect, and its reply matching is a FIFO: a
command that times out leaves its waiter first in line and every later reply would go to the
wrong caller. So a timeout is treated as a broken connection, exactly like the peer going away:
every pending command fails with EslDisconnected and ``events()`` ends. The service makes a new
controller to reconnect.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import uuid as uuidlib
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue
from greenswitch.esl import InboundESL, NotConnectedError

from .protocol import (
    MAX_BODY_BYTES,
    EslAuthError,
    EslCommandError,
    EslConnectError,
    EslDisconnected,
    EslError,
    EslEvent,
    EslProtocolError,
    bgapi_text,
    check_command,
    check_reply,
    event_from_headers,
    parse_plain_event,
    sendmsg_text,
    subscribe_text,
)

__all__ = ["DEFAULT_EVENTS", "EslController"]

log = logging.getLogger(__name__)

DEFAULT_EVENTS: tuple[str, ...] = (
    "CHANNEL_PARK",
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

_CLOSED = "ESL controller closed"


@dataclass(slots=True)
class _Job:
    text: str | None  # None: stop the thread
    future: concurrent.futures.Future[str] | None
    name: str  # the command's first word, the only part that may appear in errors


class _InboundESL(InboundESL):  # type: ignore[misc]
    """greenswitch's InboundESL with three local repairs, all inside the gevent thread.

    * ``send`` uses ``sendall`` under a lock: greenswitch ignores partial sends, and the FIFO of
      reply waiters must match the order commands hit the wire.
    * ``text/event-plain`` payloads are parsed by our own parser (values decoded one by one, the
      body kept apart and not url-decoded) instead of greenswitch's whole-block unquote.
    * Bodies are read as bytes until complete or EOF; greenswitch's reader spins forever on EOF
      in the middle of a body and dies on invalid UTF-8. Any such failure ends the reader
      cleanly (``fsb_error`` says why) instead of killing its greenlet with a traceback.
    """

    def __init__(self, host: str, port: int, password: str, timeout: float) -> None:
        super().__init__(host, port, password, timeout=timeout)
        self._send_lock = gevent.lock.Semaphore()
        self.fsb_error: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"<_InboundESL {self.host}:{self.port}>"

    def send(self, data: str) -> Any:
        if not self.connected:
            raise NotConnectedError()
        result = gevent.event.AsyncResult()
        raw = (data + "\n\n").encode("utf-8")
        with self._send_lock:
            self._commands_sent.append(result)
            self.sock.sendall(raw)
        return result.get()

    def handle_event(self, event: Any) -> None:
        try:
            ctype = event.headers.get("Content-Type")
            if ctype == "api/response":
                raw = self._read_body(event.headers.get("Content-Length", "0"))
                event.data = raw.decode("utf-8", errors="replace")
                self._commands_sent.pop(0).set(event)
            elif ctype == "text/event-plain":
                raw = self._read_body(event.headers.get("Content-Length", "0"))
                headers, body = parse_plain_event(raw)
                event.headers = headers  # greenswitch routes on Event-Name / Event-Subclass
                event.fsb_event = event_from_headers(headers, body)
                self._esl_event_queue.put(event)
            else:
                super().handle_event(event)
        except Exception as exc:
            # An unsolicited reply, a torn frame or garbage: the stream cannot be trusted.
            self.fsb_error = f"ESL protocol error: {exc.__class__.__name__}: {exc}"
            self._run = False
            self.connected = False

    def _read_body(self, length_text: str) -> bytes:
        length = int(length_text.strip())
        if not 0 <= length <= MAX_BODY_BYTES:
            raise EslProtocolError(f"bad Content-Length {length}")
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            chunk = self.sock_file.read(remaining)
            if not chunk:
                raise EslDisconnected("connection closed in the middle of a frame")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


def _first_word(command: str) -> str:
    return command.split(None, 1)[0] if command.strip() else "?"


def _set_exception(fut: concurrent.futures.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        try:
            fut.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass


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
        self._host = host
        self._port = port
        self._password = password
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._subscribe = subscribe_text(events)
        self._where = f"{host}:{port}"

        # Shared between the threads, guarded by _lock.
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()
        self._watcher: Any = None
        self._thread_done = False
        self._outstanding: set[concurrent.futures.Future[str]] = set()
        # Written only by the gevent thread; plain reads elsewhere are fine.
        self._lost_reason: str | None = None

        # gevent-thread state.
        self._esl: _InboundESL | None = None
        self._stop_evt: gevent.event.Event | None = None
        self._graceful = False
        self._job_greenlets: set[gevent.Greenlet] = set()

        # asyncio-side state.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
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
        return self._state == "connected" and self._lost_reason is None and not self._closing

    # ---------------------------------------------------------------- asyncio side

    async def connect(self) -> None:
        """Connect, authenticate and subscribe.

        Raises EslAuthError (password rejected), EslConnectError (refused, unreachable, no
        greeting within ``connect_timeout``, subscription refused).
        """
        if self._state != "new":
            raise RuntimeError("EslController.connect() runs once; make a new controller")
        self._state = "connecting"
        loop = self._loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"fsbridge-esl-{self._where}", daemon=True
        )
        thread.start()
        try:
            await asyncio.wrap_future(ready)
        except asyncio.CancelledError:
            self._request_stop()
            raise
        except BaseException:
            self._state = "closed"
            await loop.run_in_executor(None, thread.join)
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
            thread = self._thread
            if thread is not None:
                self._request_stop()
                await asyncio.get_running_loop().run_in_executor(None, thread.join)
        finally:
            self._state = "closed"
            self._deliver_end(_CLOSED)
            self._closed.set()
            log.info("ESL connection to %s closed", self._where)

    @staticmethod
    def _checked(reply: str, name: str) -> str:
        try:
            return check_reply(reply)
        except EslCommandError as exc:
            raise EslCommandError(exc.reply, name) from None

    async def _call(self, text: str, name: str) -> str:
        if self._state != "connected" or self._closing:
            raise EslDisconnected(self._lost_reason or f"ESL to {self._where} is not connected")
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._lock:
            if self._thread_done or self._watcher is None:
                raise EslDisconnected(self._lost_reason or _CLOSED)
            self._outstanding.add(fut)
            self._jobs.append(_Job(text, fut, name))
            self._watcher.send()
        fut.add_done_callback(self._forget_future)
        return await asyncio.wrap_future(fut)

    def _forget_future(self, fut: concurrent.futures.Future[str]) -> None:
        with self._lock:
            self._outstanding.discard(fut)

    def _request_stop(self) -> None:
        with self._lock:
            if self._thread_done:
                return
            self._jobs.append(_Job(None, None, "exit"))
            if self._watcher is not None:
                self._watcher.send()

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

    # ---------------------------------------------------------------- gevent thread

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the asyncio loop is closed; nobody is listening any more
            pass

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        if not ready.set_running_or_notify_cancel():
            with self._lock:
                self._thread_done = True
            return
        hub = gevent.get_hub()
        self._stop_evt = gevent.event.Event()
        watcher = hub.loop.async_()  # ref'd: also keeps the idle hub from raising LoopExit
        watcher.start(self._drain_jobs)
        with self._lock:
            self._watcher = watcher
            if self._jobs:  # close() came before the watcher existed
                watcher.send()
        try:
            try:
                esl = self._open()
            except BaseException as exc:
                ready.set_exception(exc)
                return
            self._esl = esl
            ready.set_result(None)
            self._stop_evt.wait()
            self._teardown(esl)
        finally:
            self._finish_thread(watcher, hub)

    def _open(self) -> _InboundESL:
        where = self._where
        esl = _InboundESL(self._host, self._port, self._password, timeout=self._connect_timeout)
        esl.register_handle("*", self._on_gs_event)
        esl.register_handle("DISCONNECT", self._on_gs_disconnect)
        timer = gevent.Timeout(self._connect_timeout)
        timer.start()
        try:
            try:
                esl.connect()
                reply = esl.send(self._subscribe)
            finally:
                timer.close()
        except gevent.Timeout as t:
            self._close_esl(esl, graceful=False)
            if t is not timer:
                raise
            raise EslConnectError(
                f"ESL server at {where} did not complete the handshake within "
                f"{self._connect_timeout:g}s"
            ) from None
        except ValueError:  # greenswitch: 'Invalid password.'
            self._close_esl(esl, graceful=False)
            raise EslAuthError(f"ESL server at {where} rejected the password") from None
        except NotConnectedError as exc:
            self._close_esl(esl, graceful=False)
            raise EslConnectError(f"cannot connect to ESL at {where}: {exc}") from None
        except OSError as exc:
            self._close_esl(esl, graceful=False)
            raise EslConnectError(
                f"cannot connect to ESL at {where}: {exc.strerror or exc.__class__.__name__}"
            ) from None
        except BaseException:
            self._close_esl(esl, graceful=False)
            raise
        text = getattr(reply, "data", "") or ""
        if not text.startswith("+OK"):
            self._close_esl(esl, graceful=False)
            raise EslConnectError(f"ESL server at {where} refused the subscription: {text.strip()}")
        esl._receive_events_greenlet.link(self._on_reader_exit)
        return esl

    def _drain_jobs(self) -> None:
        # Runs in the hub greenlet: must not block, so each job gets its own greenlet.
        while True:
            try:
                job = self._jobs.popleft()
            except IndexError:
                return
            if job.future is None:
                self._trigger(_CLOSED, graceful=True)
                continue
            self._job_greenlets.add(gevent.spawn(self._run_job, job))

    def _run_job(self, job: _Job) -> None:
        fut = job.future
        assert fut is not None and job.text is not None
        try:
            if fut.done() or not fut.set_running_or_notify_cancel():
                return  # cancelled before it was sent: nothing to undo
            esl = self._esl
            if self._lost_reason is not None or esl is None:
                _set_exception(fut, EslDisconnected(self._lost_reason or _CLOSED))
                return
            timer = gevent.Timeout(self._command_timeout)
            timer.start()
            try:
                reply = esl.send(job.text)
            except gevent.Timeout as t:
                if t is not timer:
                    raise
                self._trigger(
                    f"ESL command {job.name!r} got no reply within {self._command_timeout:g}s "
                    "(replies would be out of step, connection closed)",
                    graceful=False,
                )
                _set_exception(fut, EslDisconnected(self._lost_reason or _CLOSED))
            except NotConnectedError:
                _set_exception(fut, EslDisconnected(self._lost_reason or "ESL connection lost"))
            except Exception as exc:
                self._trigger(f"ESL send failed: {exc.__class__.__name__}", graceful=False)
                _set_exception(fut, EslDisconnected(self._lost_reason or _CLOSED))
            else:
                if not fut.done():
                    fut.set_result(getattr(reply, "data", "") or "")
            finally:
                timer.close()
        finally:
            self._job_greenlets.discard(gevent.getcurrent())

    def _trigger(self, reason: str, *, graceful: bool) -> None:
        """Start the shutdown of this connection (idempotent; the first reason wins)."""
        if self._lost_reason is None:
            self._lost_reason = reason
            self._graceful = graceful
            if not graceful:
                log.warning("ESL connection to %s lost: %s", self._where, reason)
        if self._stop_evt is not None:
            self._stop_evt.set()

    def _on_gs_event(self, gs_event: Any) -> None:
        ev = getattr(gs_event, "fsb_event", None)
        if ev is None:
            ev = event_from_headers(gs_event.headers, getattr(gs_event, "data", None))
        self._post(self._deliver, ev)

    def _on_gs_disconnect(self, gs_event: Any) -> None:
        self._trigger("ESL server sent a disconnect notice", graceful=False)

    def _on_reader_exit(self, greenlet: Any) -> None:
        esl = self._esl
        reason = (esl.fsb_error if esl is not None else None) or "ESL server closed the connection"
        self._trigger(reason, graceful=False)

    def _teardown(self, esl: _InboundESL) -> None:
        reason = self._lost_reason or _CLOSED
        if not self._graceful:
            self._fail_outstanding(EslDisconnected(reason))  # nothing will answer them now
        self._close_esl(esl, graceful=self._graceful)
        # Events greenswitch read but had not dispatched yet still go out, before the end.
        queue = esl._esl_event_queue
        while True:
            try:
                gs_event = queue.get_nowait()
            except gevent.queue.Empty:
                break
            if gs_event.headers.get("Content-Type") != "text/disconnect-notice":
                self._on_gs_event(gs_event)
        self._fail_outstanding(EslDisconnected(reason))
        greenlets = list(self._job_greenlets)
        gevent.killall(greenlets, block=True, timeout=1.0)
        self._post(self._deliver_end, reason)

    def _close_esl(self, esl: _InboundESL, *, graceful: bool) -> None:
        if graceful and esl.connected:
            try:
                with gevent.Timeout(min(self._command_timeout, 2.0)):
                    esl.send("exit")
            except (gevent.Timeout, Exception):
                pass
        esl._run = False
        esl.connected = False
        sock = getattr(esl, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for greenlet in (esl._receive_events_greenlet, esl._process_events_greenlet):
            if greenlet is not None:
                greenlet.kill(block=True, timeout=1.0)
        for closable in (getattr(esl, "sock_file", None), sock):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass

    def _fail_outstanding(self, exc: EslError) -> None:
        with self._lock:
            futures = list(self._outstanding)
        for fut in futures:
            _set_exception(fut, exc)

    def _finish_thread(self, watcher: Any, hub: Any) -> None:
        with self._lock:
            self._thread_done = True
            self._jobs.clear()
            futures = list(self._outstanding)
        exc = EslDisconnected(self._lost_reason or _CLOSED)
        for fut in futures:
            _set_exception(fut, exc)
        self._post(self._deliver_end, self._lost_reason or _CLOSED)
        watcher.stop()
        watcher.close()
        self._esl = None
        hub.destroy(destroy_loop=True)
