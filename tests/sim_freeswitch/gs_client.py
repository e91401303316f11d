"""greenswitch (the real ESL client) driven from asyncio, per the reference's tested recipe (§4.4).

greenswitch runs in one dedicated thread with its own gevent hub, never monkey-patched. asyncio
hands it jobs through a deque and a ref'd loop async watcher; its handlers hand events back with
``call_soon_threadsafe``. Used by the simulator's tests as the independent client.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

Headers = dict[str, str]


class GsClient:
    def __init__(
        self, host: str, port: int, password: str, subscribe: str | None = "event plain ALL"
    ):
        self.host, self.port, self.password, self.subscribe = host, port, password, subscribe
        self.events: list[Headers] = []
        self.disconnected = False
        self._jobs: collections.deque[
            tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]
        ] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._watcher: Any = None
        self._stop_evt: Any = None
        self._esl: Any = None
        self._changed: asyncio.Event | None = None

    # ---------------------------------------------------------------- gevent thread
    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        import gevent
        import gevent.event
        import greenswitch

        hub = gevent.get_hub()
        self._stop_evt = gevent.event.Event()
        watcher = hub.loop.async_()
        watcher.start(self._drain)
        self._watcher = watcher
        esl = None
        try:
            esl = greenswitch.InboundESL(self.host, self.port, self.password)
            esl.register_handle("*", self._on_event)
            esl.register_handle("DISCONNECT", self._on_disconnect)
            esl.connect()
            if self.subscribe:
                esl.send(self.subscribe)
            self._esl = esl
        except BaseException as exc:  # reported to asyncio, the thread then ends
            ready.set_exception(exc)
            if esl is not None:
                try:
                    esl._run = False
                    esl.sock.close()
                except Exception:
                    pass
            watcher.stop()
            watcher.close()
            return
        ready.set_result(None)
        self._stop_evt.wait()
        try:
            esl.stop()
        except Exception:
            pass
        watcher.stop()
        watcher.close()

    def _drain(self) -> None:
        import gevent

        while self._jobs:
            fn, args, fut = self._jobs.popleft()
            gevent.spawn(self._run_job, fn, args, fut)

    @staticmethod
    def _run_job(
        fn: Callable[..., Any], args: tuple[Any, ...], fut: concurrent.futures.Future[Any]
    ) -> None:
        import gevent

        try:
            with gevent.Timeout(10):
                fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    def _on_event(self, ev: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._push, dict(ev.headers))

    def _on_disconnect(self, ev: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._set_disconnected)

    # ---------------------------------------------------------------- asyncio side
    def _push(self, headers: Headers) -> None:
        self.events.append(headers)
        assert self._changed is not None
        self._changed.set()

    def _set_disconnected(self) -> None:
        self.disconnected = True
        assert self._changed is not None
        self._changed.set()

    async def start(self) -> GsClient:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), 10)
        except BaseException:
            await self._join()
            raise
        return self

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.append((fn, args, fut))
        self._watcher.send()
        return await asyncio.wait_for(asyncio.wrap_future(fut), 15)

    async def send(self, command: str) -> Any:
        """greenswitch's send(): returns its ESLEvent (``.headers`` and ``.data``)."""
        return await self._call(self._esl.send, command)

    async def api(self, command: str) -> str:
        return (await self.send(f"api {command}")).data

    async def wait_event(
        self, pred: Callable[[Headers], bool], timeout: float = 5.0, start: int = 0
    ) -> Headers:
        """The first event (from index ``start``) matching ``pred``."""
        assert self._changed is not None
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event within {timeout} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def named(self, name: str, uuid: str | None = None) -> list[Headers]:
        return [
            e for e in self.events
            if (e.get("Event-Name") == name or e.get("Event-Subclass") == name)
            and (uuid is None or e.get("Unique-ID") == uuid)
        ]  # fmt: skip

    async def stop(self) -> None:
        if (
            self._stop_evt is not None
            and self._watcher is not None
            and self._thread
            and self._thread.is_alive()
        ):
            self._jobs.append((self._stop_evt.set, (), concurrent.futures.Future()))
            try:
                self._watcher.send()
            except Exception:
                pass
        await self._join()

    async def _join(self) -> None:
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._thread.join, 10)
