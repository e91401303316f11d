"""The admin HTTP API: probes, metrics, the live calls, and the few actions on a call.

Read-only endpoints (``/healthz`` ``/readyz`` ``/metrics`` ``/calls`` ``/calls/{uuid}``) answer on
the main listen port too, where container probes and Prometheus look. Endpoints that change a call
(``POST /calls/{uuid}/hangup|say|trace``) exist only on the admin listener (``admin.host``, loopback
by default; or the main port when ``admin.port`` is 0) and need ``Authorization: Bearer
<admin.token>``; with no token configured they are refused, never open.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from .esl.protocol import EslError
from .metrics import CONTENT_TYPE_LATEST, CallMetrics, Metrics

if TYPE_CHECKING:
    from .call.call import Call
    from .call.summary import EslLink
    from .config import Config

__all__ = ["AdminApi", "Listeners", "ServiceView", "call_view"]

log = logging.getLogger("fsbridge.admin")

_CAUSE = re.compile(r"^[A-Z_]{1,40}$")
MAX_SAY_CHARS = 4000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServiceView(Protocol):
    """What the admin API needs of the service."""

    config: Config
    metrics: Metrics
    calls: Mapping[str, Call]
    esl: EslLink

    @property
    def is_ready(self) -> bool: ...
    @property
    def esl_connected(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    def call_metrics(self, call: Call) -> CallMetrics | None: ...
    def trace_call(self, call: Call) -> Path: ...
    def trace_path(self, call: Call) -> Path | None: ...


def call_view(call: Call, metrics: CallMetrics | None, trace: Path | None) -> dict[str, Any]:
    """One live call as the admin API and ``fsbridge calls`` show it."""
    now = time.monotonic()
    m = metrics
    return {
        "uuid": call.uuid,
        "caller": call.channel.get("Caller-Caller-ID-Number", ""),
        "profile": call.profile_name,
        "state": call.state,
        "started": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (now - call.started))
        ),
        "duration_s": round(now - call.started, 1),
        "turns": call.summary.turns,
        "barge_ins": call.summary.barge_ins,
        "first_audio_ms": _r(m.last_first_audio_ms) if m else None,
        "bridge_ms": _r(m.last_bridge_ms) if m else None,
        "tokens": m.tokens if m else None,
        "cost_usd": round(cost, 6) if (cost := m.cost_usd if m else None) is not None else None,
        "trace": str(trace) if trace else None,
    }


def _r(v: float | None) -> float | None:
    return round(v, 1) if v is not None else None


@dataclass
class Listeners:
    """The HTTP listeners of a service: the main port, and the admin port when separate."""

    http_port: int
    admin_port: int | None
    runners: list[web.AppRunner] = field(default_factory=list)

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _listen(runner: web.AppRunner, host: str, port: int) -> int:
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return sockets[0].getsockname()[1] if sockets else port


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class AdminApi:
    def __init__(self, service: ServiceView) -> None:
        self.service = service

    async def listen(self, add_main_routes: Callable[[web.Application], None]) -> Listeners:
        """Start the main listener (``add_main_routes`` + read-only routes; actions too when
        ``admin.port`` is 0) and the separate admin listener. The main port is essential and
        its failure raises; the admin port is not: the bridge serves calls without it."""
        cfg = self.service.config
        separate = cfg.admin.port != 0
        main = web.Application()
        add_main_routes(main)
        self.add_read_routes(main)
        if not separate:
            self.add_action_routes(main)
        runner = web.AppRunner(main, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            port = await _listen(runner, cfg.listen.host, cfg.listen.port)
        except BaseException:
            await runner.cleanup()
            raise
        out = Listeners(port, None if separate else port, [runner])
        log.info("listening", extra={"fields": {"host": cfg.listen.host, "port": port}})
        if not separate:
            return out
        app = web.Application()
        self.add_read_routes(app)
        self.add_action_routes(app)
        admin = web.AppRunner(app, handle_signals=False, access_log=None)
        await admin.setup()
        out.runners.append(admin)
        try:
            out.admin_port = await _listen(admin, cfg.admin.host, cfg.admin.port)
            log.info(
                "admin API listening",
                extra={"fields": {"host": cfg.admin.host, "port": out.admin_port}},
            )
        except OSError as exc:
            log.error(
                "admin API cannot listen on %s:%s: %s (calls are still served; probes and metrics "
                "answer on port %s)",
                cfg.admin.host,
                cfg.admin.port,
                exc.strerror or exc,
                port,
            )
        return out

    # -- routes
    def add_read_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/calls", self.calls)
        app.router.add_get("/calls/{uuid}", self.call)

    def add_action_routes(self, app: web.Application) -> None:
        app.router.add_post("/calls/{uuid}/hangup", self._guarded(self.hangup))
        app.router.add_post("/calls/{uuid}/say", self._guarded(self.say))
        app.router.add_post("/calls/{uuid}/trace", self._guarded(self.trace))

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self.service.config.admin.token
            if token is None:
                return _error(
                    403, "admin actions are disabled: set admin.token (FSBRIDGE_ADMIN_TOKEN)"
                )
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            expected = token.get_secret_value().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), expected
            ):
                log.warning(
                    "admin request refused: %s",
                    "no bearer token" if not given else "wrong token",
                    extra={"fields": {"path": request.path, "peer": request.remote}},
                )
                return _error(
                    401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}
                )
            return await handler(request)

        return guarded

    # -- read-only
    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        s = self.service
        body = {"ready": s.is_ready, "esl": s.esl_connected, "draining": s.draining}
        return web.json_response(body, status=200 if s.is_ready else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        resp = web.Response(body=self.service.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    def _view(self, call: Call) -> dict[str, Any]:
        s = self.service
        return call_view(call, s.call_metrics(call), s.trace_path(call))

    async def calls(self, _: web.Request) -> web.Response:
        return web.json_response([self._view(c) for c in list(self.service.calls.values())])

    def _find(self, request: web.Request) -> Call | None:
        return self.service.calls.get(request.match_info["uuid"])

    async def call(self, request: web.Request) -> web.Response:
        call = self._find(request)
        if call is None:
            return _error(404, "no such call")
        return web.json_response(self._view(call))

    # -- actions
    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(
                text='{"error": "the body must be a JSON object"}', content_type="application/json"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text='{"error": "the body must be a JSON object"}', content_type="application/json"
            )
        return body

    async def hangup(self, request: web.Request) -> web.Response:
        call = self._find(request)
        if call is None:
            return _error(404, "no such call")
        body = await self._body(request)
        cause = body.get("cause", "NORMAL_CLEARING")
        if not isinstance(cause, str) or not _CAUSE.match(cause):
            return _error(400, "cause must be a FreeSWITCH hangup cause such as NORMAL_CLEARING")
        try:
            await self.service.esl.api(f"uuid_kill {call.uuid} {cause}")
        except EslError as exc:
            return _error(502, f"FreeSWITCH refused the hangup: {exc}")
        log.info("hangup requested over the admin API", extra={"fields": {"uuid": call.uuid}})
        return web.json_response({"ok": True, "uuid": call.uuid, "cause": cause})

    async def say(self, request: web.Request) -> web.Response:
        call = self._find(request)
        if call is None:
            return _error(404, "no such call")
        body = await self._body(request)
        text, role, respond = (
            body.get("text"),
            body.get("role", "user"),
            body.get("respond", True),
        )
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_SAY_CHARS:
            return _error(
                400, f"text must be a non-empty string of at most {MAX_SAY_CHARS} characters"
            )
        if role not in ("user", "system"):
            return _error(400, "role must be 'user' or 'system'")
        if not isinstance(respond, bool):
            return _error(400, "respond must be true or false")
        say = getattr(call, "say", None)
        if say is None:
            return _error(501, "this build cannot inject text into a call")
        try:
            await say(text, role, respond)
        except Exception as exc:  # the call decides what it can do now; report, never crash
            log.warning("say failed: %s", exc, extra={"fields": {"uuid": call.uuid}})
            return _error(409, f"the call could not take the text: {exc}")
        log.info(
            "text injected over the admin API", extra={"fields": {"uuid": call.uuid, "role": role}}
        )
        return web.json_response({"ok": True, "uuid": call.uuid})

    async def trace(self, request: web.Request) -> web.Response:
        call = self._find(request)
        if call is None:
            return _error(404, "no such call")
        try:
            path = self.service.trace_call(call)
        except OSError as exc:
            return _error(500, f"cannot write the trace: {exc.strerror or exc}")
        return web.json_response({"ok": True, "uuid": call.uuid, "trace": str(path)})
