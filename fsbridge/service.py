"""The service: owns the ESL controller, the fork server, the admin app and the calls.

It connects to FreeSWITCH (reconnecting with backoff: a new controller each time, since greenswitch
cannot reconnect), claims every channel whose CHANNEL_PARK carries ``variable_fsbridge_profile``
(and those already parked when it connects), routes each channel's events to its call, and gives
calls it will not serve (over ``service.max_calls``, or arriving while it drains) the profile's
fallback. On stop it drains: ``/readyz`` turns 503, active calls may finish for
``service.drain_timeout_s``, the rest are ended politely (goodbye file, transfer or hangup), then
the ESL connection and the listeners close. It holds no per-call state beyond the dict of calls
(and, for channels it diverts, the small ``ChannelWatch`` their prompts wait on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from .admin import AdminApi
from .call.call import Call
from .call.observer import Observers
from .call.summary import CallSummary, EslLink
from .config import Config, ConfigError, Profile
from .esl.controller import EslController
from .esl.protocol import (
    EslAuthError,
    EslConnectError,
    EslDisconnected,
    EslError,
    EslEvent,
    parse_channel_dump,
)
from .fallback import ChannelWatch, divert, end_politely
from .fork.server import ForkServer
from .logs import call_uuid
from .metrics import CallMetrics, Metrics
from .trace import CallTrace, Redactor

__all__ = ["Service"]

log = logging.getLogger("fsbridge.service")

PROFILE_VAR = "fsbridge_profile"
CLAIM_REALM = "fsbridge"
STRAGGLER_TIMEOUT_S = 15.0  # diverted channels still playing a prompt when we stop


class _CurrentEsl(EslLink):
    """The calls' view of FreeSWITCH: whatever controller is connected right now."""

    def __init__(self) -> None:
        self.controller: EslController | None = None

    @property
    def connected(self) -> bool:
        return self.controller is not None and self.controller.connected

    def _ctl(self) -> EslController:
        if self.controller is None or not self.controller.connected:
            raise EslDisconnected("not connected to FreeSWITCH")
        return self.controller

    async def api(self, command: str) -> str:
        return await self._ctl().api(command)

    async def bgapi(self, command: str) -> str:
        return await self._ctl().bgapi(command)

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:
        await self._ctl().sendmsg(uuid, dict(headers))


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.esl = _CurrentEsl()
        self.fork_server = ForkServer()
        self.metrics = Metrics(config.prices)
        self.redactor = Redactor.for_config(config)
        self.admin = AdminApi(self)
        self.calls: dict[str, Call] = {}
        self._tasks: dict[str, asyncio.Task[CallSummary | None]] = {}  # calls and diverted ones
        self._watches: dict[str, ChannelWatch] = {}
        self.finished: list[CallSummary] = []
        self.ready = asyncio.Event()  # ESL connected and the HTTP server listening
        self.draining = False
        self.http_port: int | None = None
        self.admin_port: int | None = None
        self._hurry = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    # -- state for the admin API ------------------------------------------------------------------
    @property
    def esl_connected(self) -> bool:
        return self.ready.is_set() and self.esl.connected

    @property
    def is_ready(self) -> bool:
        return self.esl_connected and not self.draining

    def call_metrics(self, call: Call) -> CallMetrics | None:
        return _observer(call, CallMetrics)

    def trace_path(self, call: Call) -> Path | None:
        trace = _observer(call, CallTrace)
        return trace.path if trace is not None else None

    def trace_call(self, call: Call) -> Path:
        """Start tracing a live call (from now on); returns the trace directory."""
        trace = _observer(call, CallTrace)
        if trace is None:
            raise OSError("this call has no trace observer")
        return trace.enable(call, live=True)

    def hurry(self) -> None:
        """Stop waiting for calls to finish on their own (a second SIGTERM/SIGINT)."""
        self._hurry.set()

    # -- lifetime ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        Path(self.config.freeswitch.chunk_dir).mkdir(parents=True, exist_ok=True)
        async with aiohttp.ClientSession() as http:
            self._http = http
            listeners = await self.admin.listen(self.fork_server.add_routes)
            self.http_port, self.admin_port = listeners.http_port, listeners.admin_port
            esl_task = asyncio.create_task(self._esl_loop(), name="esl-loop")
            try:
                await stop.wait()
                await self._drain()
            finally:
                self.draining = True
                await self._cancel_all()
                esl_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await esl_task
                await listeners.close()
                self._http = None
        log.info("stopped")

    async def _drain(self) -> None:
        self.draining = True
        self.metrics.draining.set(1)
        timeout = self.config.service.drain_timeout_s
        if self._tasks:
            log.info(
                "draining: not taking new calls; waiting up to %g s for %d call(s) to end",
                timeout,
                len(self.calls),
            )
        await self._wait_tasks(timeout)
        rest = list(self.calls)
        if rest:
            log.warning("drain time is up: ending %d call(s) politely", len(rest))
            await asyncio.gather(*(self._end_politely(u) for u in rest), return_exceptions=True)
        await self._wait_tasks(STRAGGLER_TIMEOUT_S)
        log.info("drained")

    async def _wait_tasks(self, timeout: float) -> None:
        """Until every call task ended, ``timeout`` passed or ``hurry()`` was called."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks and not self._hurry.is_set():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            hurry = asyncio.create_task(self._hurry.wait())
            try:
                await asyncio.wait(
                    {hurry, *self._tasks.values()},
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                hurry.cancel()
                await asyncio.gather(hurry, return_exceptions=True)

    async def _end_politely(self, uuid: str) -> None:
        call, task = self.calls.get(uuid), self._tasks.get(uuid)
        if call is None or task is None:
            return
        token = call_uuid.set(uuid)
        watch = self._watches[uuid] = ChannelWatch()
        try:
            task.cancel()  # the call stops the fork, closes the model session, removes its files
            await asyncio.gather(task, return_exceptions=True)
            if call.ending and call.summary.outcome == "transferred":
                return  # the channel left park before the drain came: it is not ours any more
            with contextlib.suppress(EslError):
                if (await self.esl.api(f"uuid_exists {uuid}")).strip() != "true":
                    return
            if call.ending:  # it was hanging up on its own: finish that, no goodbye on top
                with contextlib.suppress(EslError):
                    await self.esl.api(f"uuid_kill {uuid} NORMAL_CLEARING")
                return
            action = await end_politely(self.esl, watch, uuid, call.profile)
            self.metrics.fallbacks.labels("drain", action).inc()
            log.info("call ended by the drain", extra={"fields": {"action": action}})
        finally:
            self._watches.pop(uuid, None)
            call_uuid.reset(token)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- ESL --------------------------------------------------------------------------------------
    async def _esl_loop(self) -> None:
        fs = self.config.freeswitch
        backoff = 0.25
        connected_before = False
        while True:
            ctl = EslController(
                fs.host,
                fs.port,
                fs.password.get_secret_value(),
                command_timeout=fs.command_timeout_s,
                connect_timeout=fs.connect_timeout_s,
            )
            try:
                await ctl.connect()
            except EslAuthError:
                log.error("FreeSWITCH rejected the ESL password (freeswitch.password)")
                await ctl.close()
                await asyncio.sleep(fs.reconnect_max_backoff_s)
                continue
            except (EslConnectError, EslError, OSError) as exc:
                log.warning("cannot reach FreeSWITCH ESL at %s:%s: %s", fs.host, fs.port, exc)
                await ctl.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, fs.reconnect_max_backoff_s)
                continue
            backoff = 0.25
            if connected_before:
                self.metrics.esl_reconnects.inc()
            connected_before = True
            self.esl.controller = ctl
            self.metrics.esl_connected.set(1)
            log.info(
                "connected to FreeSWITCH ESL", extra={"fields": {"esl": f"{fs.host}:{fs.port}"}}
            )
            try:
                self.ready.set()
                await self._claim_parked()
                async for ev in ctl.events():
                    self._on_event(ev)
                log.warning("lost the ESL connection; reconnecting")
            except EslError as exc:
                log.warning("ESL connection failed: %s; reconnecting", exc)
            finally:
                self.ready.clear()
                self.metrics.esl_connected.set(0)
                self.esl.controller = None
                await ctl.close()

    async def _claim_parked(self) -> None:
        """Claim calls that were parked with our variable before we connected."""
        text = await self.esl.api("show channels as json")
        try:
            rows = json.loads(text).get("rows", [])
        except (ValueError, AttributeError):
            log.warning("unexpected 'show channels' reply: %.80s", text)
            return
        for row in rows:
            uuid = row.get("uuid")
            if not uuid or uuid in self._tasks or row.get("application") != "park":
                continue
            try:  # the variables a CHANNEL_PARK would have carried (profile, overrides, caller)
                channel = parse_channel_dump(await self.esl.api(f"uuid_dump {uuid}"))
            except EslError as exc:  # hung up meanwhile (or not a dump: EslProtocolError)
                log.debug("parked channel %s not read: %s", uuid, exc)
                continue
            profile = channel.get(f"variable_{PROFILE_VAR}", "").strip()
            if profile:
                self._claim(uuid, profile, channel)

    def _on_event(self, ev: EslEvent) -> None:
        uuid = ev.uuid
        if not uuid:
            return
        watch = self._watches.get(uuid)
        if watch is not None:
            watch.on_event(ev)
        call = self.calls.get(uuid)
        if call is not None:
            call.on_event(ev)
            return
        if ev.name == "CHANNEL_PARK" and watch is None:
            profile = ev.variable(PROFILE_VAR)
            if profile:
                self._claim(uuid, profile, ev.headers)

    def _claim(self, uuid: str, profile_name: str, channel: Mapping[str, str]) -> None:
        if uuid in self._tasks:
            return
        svc = self.config.service
        try:
            profile = self.config.profile(profile_name)
        except ConfigError as exc:
            log.error("call %s: %s; hanging up", uuid, exc, extra={"fields": {"uuid": uuid}})
            self._start_task(uuid, self._reject(uuid, profile_name))
            return
        if self.draining:
            if svc.instance_id:
                return  # another instance may take it
            self._divert(uuid, profile_name, profile, "draining")
            return
        if len(self.calls) >= svc.max_calls:
            self._divert(uuid, profile_name, profile, "over_capacity")
            return
        assert self._http is not None
        model = profile.model or self.config.realtime.model
        call = Call(
            uuid=uuid,
            profile_name=profile_name,
            profile=profile,
            config=self.config,
            esl=self.esl,
            fork_server=self.fork_server,
            http=self._http,
            channel=channel,
            observer=Observers(
                [self.metrics.call_observer(model), CallTrace(self.config, self.redactor)]
            ),
        )
        self.calls[uuid] = call
        self._start_task(uuid, self._serve(call))

    async def _serve(self, call: Call) -> CallSummary | None:
        instance = self.config.service.instance_id
        if instance:
            try:
                await self.esl.api(f"hash insert_ifempty/{CLAIM_REALM}/{call.uuid}/{instance}")
            except EslError:  # another instance claimed it first (or it is gone)
                log.info("call %s taken by another instance", call.uuid)
                return None
        try:
            return await call.run()
        finally:
            if instance:
                with contextlib.suppress(EslError):
                    await self.esl.api(f"hash delete/{CLAIM_REALM}/{call.uuid}")

    def _divert(self, uuid: str, profile_name: str, profile: Profile, reason: str) -> None:
        self._watches[uuid] = ChannelWatch()  # before any command: its events must not be missed
        self._start_task(uuid, self._divert_call(uuid, profile_name, profile, reason))

    async def _divert_call(
        self, uuid: str, profile_name: str, profile: Profile, reason: str
    ) -> CallSummary:
        call_uuid.set(uuid)
        started = time.monotonic()
        try:
            action = await divert(self.esl, self._watches[uuid], uuid, profile)
        finally:
            self._watches.pop(uuid, None)
        self.metrics.fallbacks.labels(reason, action).inc()
        self.metrics.calls.labels(reason).inc()
        log.warning(
            "call not served (%s): %s",
            "too many calls" if reason == "over_capacity" else "shutting down",
            action,
            extra={"fields": {"profile": profile_name, "max_calls": self.config.service.max_calls}},
        )
        return CallSummary(
            uuid, profile_name, outcome=reason, duration_s=round(time.monotonic() - started, 3)
        )

    async def _reject(self, uuid: str, profile_name: str) -> CallSummary:
        with contextlib.suppress(EslError):
            await self.esl.api(f"uuid_kill {uuid} CALL_REJECTED")
        self.metrics.calls.labels("rejected").inc()
        return CallSummary(uuid, profile_name, outcome="rejected")

    def _start_task(self, uuid: str, coro: Coroutine[Any, Any, CallSummary | None]) -> None:
        task = asyncio.create_task(coro, name=f"call-{uuid[:8]}")
        self._tasks[uuid] = task
        task.add_done_callback(lambda t, u=uuid: self._task_done(u, t))

    def _task_done(self, uuid: str, task: asyncio.Task[CallSummary | None]) -> None:
        self._tasks.pop(uuid, None)
        call = self.calls.pop(uuid, None)
        if task.cancelled():
            if call is not None:
                self._finish(call.summary)
            return
        exc = task.exception()
        if exc is not None:
            log.error("call %s crashed: %r", uuid, exc, extra={"fields": {"uuid": uuid}})
            return
        summary = task.result()
        if summary is not None:
            self._finish(summary)

    def _finish(self, summary: CallSummary) -> None:
        self.finished.append(summary)
        del self.finished[:-100]


def _observer(call: Call, kind: type[Any]) -> Any:
    for obs in getattr(call.observer, "observers", ()):
        if isinstance(obs, kind):
            return obs
    return None
