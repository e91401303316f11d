"""The service: owns the ESL controller, the fork server, the admin app and the calls.

It connects to FreeSWITCH (reconnecting with backoff: a new controller each time, since greenswitch
cannot reconnect), claims every channel whose CHANNEL_PARK carries ``variable_fsbridge_profile``
(and those already parked when it connects), routes each channel's events to its call, and at stop
ends the calls and closes everything it opened. It holds no per-call state beyond the dict of calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .call.call import Call, CallSummary, EslLink
from .config import Config, ConfigError
from .esl.controller import EslController
from .esl.protocol import EslAuthError, EslConnectError, EslDisconnected, EslError, EslEvent
from .fork.server import ForkServer

__all__ = ["Service"]

log = logging.getLogger("fsbridge.service")

PROFILE_VAR = "fsbridge_profile"


class _CurrentEsl(EslLink):
    """The calls' view of FreeSWITCH: whatever controller is connected right now."""

    def __init__(self) -> None:
        self.controller: EslController | None = None

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
        self.calls: dict[str, Call] = {}
        self._call_tasks: dict[str, asyncio.Task[CallSummary]] = {}
        self.finished: list[CallSummary] = []
        self.ready = asyncio.Event()  # ESL connected and the HTTP server listening
        self.draining = False
        self.http_port: int | None = None
        self._http: aiohttp.ClientSession | None = None

    # -- lifetime ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        Path(self.config.freeswitch.chunk_dir).mkdir(parents=True, exist_ok=True)
        async with aiohttp.ClientSession() as http:
            self._http = http
            app = self._make_app()
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.config.listen.host, self.config.listen.port)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.http_port = sockets[0].getsockname()[1] if sockets else self.config.listen.port
            log.info(
                "listening",
                extra={"fields": {"host": self.config.listen.host, "port": self.http_port}},
            )
            esl_task = asyncio.create_task(self._esl_loop(), name="esl-loop")
            try:
                await stop.wait()
            finally:
                self.draining = True
                await self._stop_calls()
                esl_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await esl_task
                await runner.cleanup()
                self._http = None
        log.info("stopped")

    async def _stop_calls(self) -> None:
        tasks = list(self._call_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- ESL --------------------------------------------------------------------------------------
    async def _esl_loop(self) -> None:
        fs = self.config.freeswitch
        backoff = 0.25
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
            self.esl.controller = ctl
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
            if not uuid or uuid in self.calls or row.get("application") != "park":
                continue
            profile = await self.esl.api(f"uuid_getvar {uuid} {PROFILE_VAR}")
            if profile and profile != "_undef_" and not profile.startswith("-ERR"):
                self._claim(
                    uuid, profile.strip(), {"Caller-Caller-ID-Number": row.get("cid_num", "")}
                )

    def _on_event(self, ev: EslEvent) -> None:
        uuid = ev.uuid
        if not uuid:
            return
        call = self.calls.get(uuid)
        if call is not None:
            call.on_event(ev)
            return
        if ev.name == "CHANNEL_PARK":
            profile = ev.variable(PROFILE_VAR)
            if profile:
                self._claim(uuid, profile, ev.headers)

    def _claim(self, uuid: str, profile_name: str, channel: Mapping[str, str]) -> None:
        if self.draining or uuid in self.calls:
            return
        assert self._http is not None
        try:
            profile = self.config.profile(profile_name)
        except ConfigError as exc:
            log.error("call %s: %s; hanging up", uuid, exc)
            self._start_task(uuid, self._reject(uuid))
            return
        call = Call(
            uuid=uuid,
            profile_name=profile_name,
            profile=profile,
            config=self.config,
            esl=self.esl,
            fork_server=self.fork_server,
            http=self._http,
            channel=channel,
        )
        self.calls[uuid] = call
        self._start_task(uuid, call.run())

    async def _reject(self, uuid: str) -> CallSummary:
        with contextlib.suppress(EslError):
            await self.esl.api(f"uuid_kill {uuid} CALL_REJECTED")
        return CallSummary(uuid, "", outcome="rejected")

    def _start_task(self, uuid: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=f"call-{uuid[:8]}")
        self._call_tasks[uuid] = task
        task.add_done_callback(lambda t, u=uuid: self._call_done(u, t))

    def _call_done(self, uuid: str, task: asyncio.Task[CallSummary]) -> None:
        self._call_tasks.pop(uuid, None)
        self.calls.pop(uuid, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("call %s crashed: %r", uuid, exc)
            return
        self.finished.append(task.result())
        del self.finished[:-100]

    # -- HTTP -------------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application()
        self.fork_server.add_routes(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/calls", self._calls)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ok = self.ready.is_set() and not self.draining
        body = {"ready": ok, "esl": self.ready.is_set(), "draining": self.draining}
        return web.json_response(body, status=200 if ok else 503)

    async def _calls(self, _: web.Request) -> web.Response:
        now = time.monotonic()
        return web.json_response(
            [
                {
                    "uuid": c.uuid,
                    "profile": c.profile_name,
                    "state": c.state,
                    "caller": c.channel.get("Caller-Caller-ID-Number", ""),
                    "duration_s": round(now - c.started, 1),
                    "turns": c.summary.turns,
                }
                for c in self.calls.values()
            ]
        )
