"""The gevent half of the ESL controller: everything that runs inside the dedicated thread.

greenswitch is gevent based and not thread-safe, and gevent must never be monkey-patched in this
asyncio process. So one OS thread owns a gevent hub and the ``InboundESL``; calling greenswitch
from any other thread raises LoopExit. This module is that thread and nothing else: the thread
target, one greenlet per command, and the teardown. The patched connection it drives,
``inbound._InboundESL``, lives in its own module because it is tied to greenswitch's internals
rather than to the thread handover; it too runs only in this thread. The asyncio facade
(``controller.EslController``) never touches a gevent object; the seam between the two files is
exactly the thread boundary, and ``EslThread``'s public methods are the only places it is crossed:

* asyncio → gevent: ``submit``/``request_stop`` (called from the asyncio thread) put a job on a
  ``deque`` under a lock and poke a ref'd ``hub.loop.async_()`` watcher; its callback (in the hub)
  spawns one greenlet per job. Results go back through ``concurrent.futures.Future``.
* gevent → asyncio: events and the end of the link are only ever handed over with
  ``loop.call_soon_threadsafe``, which keeps their order.

greenswitch has no per-command timeout and its reply matching is a FIFO: a command that times out
leaves its waiter first in line and every later reply would go to the wrong caller. So a timeout
is treated as a broken connection, exactly like the peer going away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.queue
from greenswitch.esl import NotConnectedError

from .inbound import _InboundESL
from .protocol import (
    EslAuthError,
    EslConnectError,
    EslDisconnected,
    EslError,
    EslEvent,
    event_from_headers,
)

__all__ = ["CLOSED", "EslThread"]

# The controller's logger, kept from before the split so log configuration need not change.
log = logging.getLogger("fsbridge.esl.controller")

CLOSED = "ESL controller closed"


@dataclass(slots=True)
class _Job:
    text: str | None  # None: stop the thread
    future: concurrent.futures.Future[str] | None
    name: str  # the command's first word, the only part that may appear in errors


def _set_exception(fut: concurrent.futures.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        try:
            fut.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass


class EslThread:
    """One inbound ESL connection run by greenswitch in its own thread and gevent hub.

    Not an asyncio object: ``start``, ``submit``, ``request_stop`` and ``join`` are the only
    methods meant for other threads (``join`` blocks). Events and the end of the link reach the
    owner through ``on_event``/``on_end``, always called in ``loop``'s thread; ``on_end`` may be
    called more than once and must ignore all but the first call.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        command_timeout: float,
        connect_timeout: float,
        subscribe: str,
        on_event: Callable[[EslEvent], None],
        on_end: Callable[[str], None],
    ) -> None:
        self._host = host
        self._port = port
        self._password = password
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._subscribe = subscribe
        self._on_event = on_event
        self._on_end = on_end
        self._where = f"{host}:{port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

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

    def __repr__(self) -> str:  # never show the password
        return f"<EslThread {self._where}>"

    @property
    def lost_reason(self) -> str | None:
        """Why the link went down (first reason wins), or None while it is up."""
        return self._lost_reason

    @property
    def started(self) -> bool:
        return self._thread is not None

    # ------------------------------------------------------- called from the asyncio thread

    def start(self, loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future[None]:
        """Start the thread; the future resolves once connected, authenticated and subscribed."""
        self._loop = loop
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"fsbridge-esl-{self._where}", daemon=True
        )
        thread.start()
        return ready

    def join(self) -> None:
        """Block until the thread has ended (run it in an executor)."""
        if self._thread is not None:
            self._thread.join()

    def submit(self, text: str, name: str) -> concurrent.futures.Future[str]:
        """Queue one command; the future gets its raw reply or EslDisconnected."""
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._lock:
            if self._thread_done or self._watcher is None:
                raise EslDisconnected(self._lost_reason or CLOSED)
            self._outstanding.add(fut)
            self._jobs.append(_Job(text, fut, name))
            self._watcher.send()
        fut.add_done_callback(self._forget_future)
        return fut

    def _forget_future(self, fut: concurrent.futures.Future[str]) -> None:
        with self._lock:
            self._outstanding.discard(fut)

    def request_stop(self) -> None:
        """Ask the thread to send ``exit`` and end (idempotent, never blocks)."""
        with self._lock:
            if self._thread_done:
                return
            self._jobs.append(_Job(None, None, "exit"))
            if self._watcher is not None:
                self._watcher.send()

    # ------------------------------------------------------- the gevent thread

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
                self._trigger(CLOSED, graceful=True)
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
                _set_exception(fut, EslDisconnected(self._lost_reason or CLOSED))
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
                _set_exception(fut, EslDisconnected(self._lost_reason or CLOSED))
            except NotConnectedError:
                _set_exception(fut, EslDisconnected(self._lost_reason or "ESL connection lost"))
            except Exception as exc:
                self._trigger(f"ESL send failed: {exc.__class__.__name__}", graceful=False)
                _set_exception(fut, EslDisconnected(self._lost_reason or CLOSED))
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
        self._post(self._on_event, ev)

    def _on_gs_disconnect(self, gs_event: Any) -> None:
        self._trigger("ESL server sent a disconnect notice", graceful=False)

    def _on_reader_exit(self, greenlet: Any) -> None:
        esl = self._esl
        reason = (esl.fsb_error if esl is not None else None) or "ESL server closed the connection"
        self._trigger(reason, graceful=False)

    def _teardown(self, esl: _InboundESL) -> None:
        reason = self._lost_reason or CLOSED
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
        self._post(self._on_end, reason)

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
        exc = EslDisconnected(self._lost_reason or CLOSED)
        for fut in futures:
            _set_exception(fut, exc)
        self._post(self._on_end, self._lost_reason or CLOSED)
        watcher.stop()
        watcher.close()
        self._esl = None
        hub.destroy(destroy_loop=True)
