"""One call: its lifetime, its two audio coroutines, and barge-in.

A ``Call`` owns everything of one channel — the Realtime connection, the fork stream, the chunk
directory, and its tasks (uplink, Realtime dispatcher, playout) — starts them in one place and
ends them in one place, whatever ended the call: the caller hanging up, the fork closing, the model
going away. It knows nothing of wire formats: ESL, fork and Realtime are reached through their
modules' small interfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import time
from base64 import b64encode
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from ..audio.resample import make_resampler
from ..audio.wav import WavError, read_wav
from ..config import Config, Profile
from ..esl.protocol import EslError, EslEvent
from ..fork.server import ForkServer, ForkStream
from ..logs import call_uuid
from ..realtime import protocol as rtp
from ..realtime.client import RealtimeConnection, RealtimeError, connect_realtime
from .chunker import ChunkPolicy
from .downlink import Playout, Truncation
from .observer import CallObserver
from .player import Player, chunk_id_of
from .uplink import UplinkStats, run_uplink

__all__ = ["Call", "CallSummary", "EslLink"]

log = logging.getLogger("fsbridge.call")

CallState = Literal["starting", "greeting", "listening", "speaking", "ended"]
# Realtime errors that are expected races, not faults (logged at debug).
BENIGN_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response"}
)


class EslLink:
    """What a call may ask of FreeSWITCH (implemented by the service over its ESL controller)."""

    async def api(self, command: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    async def bgapi(self, command: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:  # pragma: no cover
        raise NotImplementedError


@dataclass
class CallSummary:
    uuid: str
    profile: str
    outcome: str = "completed"
    duration_s: float = 0.0
    turns: int = 0
    barge_ins: int = 0
    first_audio_ms: list[float] = field(default_factory=list)
    uplink_bytes_in: int = 0
    uplink_bytes_24k: int = 0
    downlink_bytes_24k: int = 0
    downlink_bytes_out: int = 0
    files: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Ended(Exception):
    """Internal: the reason the call ended."""


class Call:
    def __init__(
        self,
        *,
        uuid: str,
        profile_name: str,
        profile: Profile,
        config: Config,
        esl: EslLink,
        fork_server: ForkServer,
        http: aiohttp.ClientSession,
        channel: Mapping[str, str] | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.uuid = uuid
        self.profile_name = profile_name
        self.profile = profile
        self.config = config
        self.esl = _ObservedEsl(esl, self)
        self.fork_server = fork_server
        self.http = http
        self.channel = dict(channel or {})
        self.state: CallState = "starting"
        self.started = time.monotonic()
        self.summary = CallSummary(uuid, profile_name)
        self.observer = observer or CallObserver()
        self._hungup = asyncio.Event()
        self._fork_failed: str | None = None
        self._rt: RealtimeConnection | None = None
        self._response_active: str | None = None
        self._uplink_stats = UplinkStats()
        fs = config.freeswitch
        self.rate = fs.fork_rate
        self.chunk_dir = Path(fs.chunk_dir) / uuid
        self.player = Player(self.esl, uuid, fs.injection)  # type: ignore[arg-type]
        pb = config.playback
        self.playout = Playout(
            rate=self.rate,
            chunk_dir=self.chunk_dir,
            player=self.player,
            policy=ChunkPolicy(pb.first_chunk_ms, pb.min_chunk_ms, pb.max_chunk_ms, pb.queue_ahead),
            resampler=make_resampler(24000, self.rate, config.audio.resampler),
            on_truncate=self._send_truncate,
            on_reply_heard=lambda r: self.observer.reply_heard(self, r),
        )

    # -- events from the service ----------------------------------------------------------------
    def on_event(self, ev: EslEvent) -> None:
        """An ESL event for this channel (called by the service, on the event loop)."""
        self.observer.esl_event(self, ev)
        name = ev.name
        if name == "PLAYBACK_START":
            cid = chunk_id_of(ev.headers)
            if cid:
                self.playout.playback_started(cid)
                self._set_state("greeting" if cid == "greeting" else "speaking")
        elif name == "PLAYBACK_STOP":
            cid = chunk_id_of(ev.headers)
            if cid:
                pos = ev.variable("playback_last_offset_pos")
                self.playout.playback_stopped(
                    cid,
                    ev.headers.get("Playback-Status", "done"),
                    int(pos) if pos and pos.isdigit() else None,
                )
                if not self.playout.busy:
                    self._set_state("listening")
        elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"):
            self._hungup.set()
        elif name == "CUSTOM" and ev.subclass in (
            "mod_audio_fork::connect_failed",
            "mod_audio_stream::error",
        ):
            self._fork_failed = ev.body or ev.subclass
            self.fork_server.forget(self.uuid)

    def hangup_seen(self) -> None:
        self._hungup.set()

    def _set_state(self, state: CallState) -> None:
        if self.state != state and self.state != "ended":
            self.state = state
            self.observer.state_changed(self)

    # -- lifetime ---------------------------------------------------------------------------------
    async def run(self) -> CallSummary:
        """Run the call to its end; never raises (except cancellation of the service)."""
        call_uuid.set(self.uuid)
        self.observer.call_started(self)
        log.info(
            "call claimed",
            extra={"fields": {"profile": self.profile_name, "caller": self._caller()}},
        )
        rt_task = asyncio.create_task(self._open_realtime(), name=f"rt-open-{self.uuid[:8]}")
        stream: ForkStream | None = None
        try:
            await self._start_fork_and_greeting()
            try:
                self._rt = await rt_task
            except (RealtimeError, TimeoutError, OSError, aiohttp.ClientError) as exc:
                self.summary.outcome = "realtime_failed"
                log.error("realtime session could not start: %s", exc)
                await self._apologise_and_hang_up()
                return self.summary
            stream = await self._accept_fork()
            if stream is not None:
                self.observer.fork_audio(self, stream.metadata)
            if stream is None:
                self.summary.outcome = "fork_failed"
                await self._apologise_and_hang_up()
                return self.summary
            if self.state == "starting":
                self._set_state("listening")
            if self.profile.greeting_mode == "model":
                await self._rt.send(rtp.response_create(self.profile.greeting_prompt))
            reason = await self._converse(self._rt, stream)
            self.summary.outcome = reason
            if reason in ("realtime_closed", "fork_closed"):
                if reason == "realtime_closed":
                    await self._apologise_and_hang_up()
                else:
                    await self._hang_up()
        except asyncio.CancelledError:
            self.summary.outcome = "service_stopped"
            raise
        except EslError as exc:
            self.summary.outcome = "esl_error"
            log.error("FreeSWITCH refused a command: %s", exc)
            await self._hang_up()
        except Exception:
            self.summary.outcome = "error"
            log.exception("call failed")
            await self._hang_up()
        finally:
            await self._cleanup(rt_task, stream)
        return self.summary

    async def _converse(self, rt: RealtimeConnection, stream: ForkStream) -> str:
        """Run the three coroutines until the first of them (or the hangup) ends the call."""
        uplink = run_uplink(
            stream.frames(),
            make_resampler(self.rate, 24000, self.config.audio.resampler),
            rt.send,
            window_ms=self.config.audio.append_window_ms,
            stats=self._uplink_stats,
        )
        jobs: dict[str, Coroutine[Any, Any, None]] = {
            "fork_closed": uplink,
            "realtime_closed": self._dispatch_realtime(rt),
            "playout_failed": self.playout.run(),
            "hangup": self._hungup.wait(),  # type: ignore[dict-item]
            "max_duration": asyncio.sleep(self.profile.max_call_s),  # type: ignore[dict-item]
        }
        tasks = {
            asyncio.create_task(coro, name=f"{name}-{self.uuid[:8]}"): name
            for name, coro in jobs.items()
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        first = next(iter(done))
        for task, result in zip(tasks, results, strict=True):
            if (
                task in done
                and isinstance(result, BaseException)
                and not isinstance(result, asyncio.CancelledError)
            ):
                if isinstance(result, EslError):
                    raise result
                log.error("%s ended with %r", tasks[task], result)
        if self._hungup.is_set():
            return "hangup"
        return tasks[first]

    # -- start ------------------------------------------------------------------------------------
    async def _open_realtime(self) -> RealtimeConnection:
        rc = self.config.realtime
        key = rc.api_key.get_secret_value() if rc.api_key else None
        conn = await connect_realtime(
            self.http,
            url=rc.url,
            model=self.profile.model or rc.model,
            api_key=key,
            auth=rc.auth,
            headers=rc.headers,
            timeout=rc.connect_timeout_s,
            on_event=lambda direction, raw: self.observer.realtime_event(self, direction, raw),
        )
        try:
            async with asyncio.timeout(rc.session_ready_timeout_s):
                await self._expect(conn, rtp.SessionCreated)
                await conn.send(rtp.session_update(self.profile))
                updated = await self._expect(conn, rtp.SessionUpdated)
            rtp.check_session(updated.session)
        except BaseException:
            await conn.close()
            raise
        log.info("realtime session ready")
        return conn

    @staticmethod
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

    async def _start_fork_and_greeting(self) -> None:
        fs = self.config.freeswitch
        user, password = f"fsb-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.fork_server.expect(self.uuid, user, password)
        if fs.fork_module == "audio_fork":
            await self.esl.api(
                f"uuid_setvar_multi {self.uuid} "
                f"MOD_AUDIO_BASIC_AUTH_USERNAME={user};MOD_AUDIO_BASIC_AUTH_PASSWORD={password}"
            )
        else:
            token = b64encode(f"{user}:{password}".encode()).decode()
            headers = json.dumps({"Authorization": f"Basic {token}"}, separators=(",", ":"))
            await self.esl.api(f"uuid_setvar {self.uuid} STREAM_EXTRA_HEADERS {headers}")
        if self.profile.greeting_mode == "file" and self.profile.greeting:
            await self._play_file(self.profile.greeting, "greeting")
            self._set_state("greeting")
        url = f"{self.config.listen.public_url}/fork/{self.uuid}"
        rate = "16k" if self.rate == 16000 else "8k"
        metadata = json.dumps(
            {"uuid": self.uuid, "profile": self.profile_name, "caller": self._caller()},
            separators=(",", ":"),
            ensure_ascii=True,
        ).replace("\\", "")
        command = "uuid_audio_fork" if fs.fork_module == "audio_fork" else "uuid_audio_stream"
        await self.esl.api(f"{command} {self.uuid} start {url} mono {rate} {metadata}")

    async def _accept_fork(self) -> ForkStream | None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not self._hungup.is_set():
            if self._fork_failed:
                log.error("fork could not connect: %s", self._fork_failed)
                return None
            try:
                return await self.fork_server.accept(self.uuid, timeout=0.25)
            except TimeoutError:
                continue
            except KeyError:  # forgotten: the fork reported connect_failed
                continue
        log.error("fork did not connect within 10 s")
        return None

    async def _play_file(self, path: str, chunk_id: str) -> float:
        """Queue a whole prompt file with uuid_broadcast; returns its duration in seconds."""
        try:
            samples, rate = read_wav(path)
        except WavError as exc:
            log.error("cannot play %s: %s", chunk_id, exc)
            return 0.0
        duration = len(samples) / rate
        self.playout.play_file(path, chunk_id, duration * 1000)
        await self.player.play(path, chunk_id, method="broadcast")
        return duration

    # -- the Realtime side -----------------------------------------------------------------------
    async def _dispatch_realtime(self, rt: RealtimeConnection) -> None:
        async for ev in rt:
            if isinstance(ev, rtp.AudioDelta):
                self.summary.downlink_bytes_24k += len(ev.audio)
                self.playout.audio(ev.response_id, ev.item_id, ev.audio)
            elif isinstance(ev, rtp.SpeechStarted):
                await self.barge_in(received=time.monotonic())
            elif isinstance(ev, rtp.AudioDone):
                self.playout.audio_done(ev.item_id)
            elif isinstance(ev, rtp.ResponseCreated):
                self._response_active = ev.response_id
                self.summary.turns += 1
            elif isinstance(ev, rtp.ResponseDone):
                if self._response_active == ev.response_id:
                    self._response_active = None
                reply = self.playout.replies.get(ev.response_id)
                if reply is not None:
                    self.observer.reply_done(self, reply)
                if ev.usage:
                    self.observer.usage(self, ev.usage)
                for k, v in (ev.usage or {}).items():
                    if isinstance(v, int):
                        self.summary.usage[k] = self.summary.usage.get(k, 0) + v
                if ev.status == "failed":
                    log.warning("response failed: %s", ev.error)
            elif isinstance(ev, rtp.Error):
                self.observer.realtime_error(self, ev.code)
                if ev.code in BENIGN_ERRORS:
                    log.debug("realtime: %s", ev.code)
                else:
                    log.warning("realtime error %s: %s", ev.code, ev.message)
        log.info("realtime session closed (code %s)", rt.close_code)

    async def barge_in(self, received: float | None = None) -> None:
        """The caller talks over what we play: stop it now, forget what they did not hear."""
        if not self.playout.busy:
            return
        greeting = self.playout.ledger.get("greeting")
        if greeting is not None and greeting.pending and not self.profile.greeting_interruptible:
            return
        self.summary.barge_ins += 1
        self.playout.cancel()  # synchronous: nothing else can be queued from here on
        await self.player.break_all()
        if received is not None:
            self.observer.barge_in(self, (time.monotonic() - received) * 1000)
        if self._response_active and not self._server_cancels() and self._rt is not None:
            await self._rt.send(rtp.response_cancel())
        log.info("barge-in")

    def _server_cancels(self) -> bool:
        td = self.profile.turn_detection
        return td.type != "none" and bool(getattr(td, "interrupt_response", False))

    async def _send_truncate(self, t: Truncation) -> None:
        if self._rt is None:
            return
        await self._rt.send(rtp.item_truncate(t.item_id, t.audio_end_ms))
        self.observer.truncated(self, t)
        log.info(
            "truncated reply to what was heard",
            extra={
                "fields": {
                    "item": t.item_id,
                    "audio_end_ms": t.audio_end_ms,
                    "received_ms": round(t.received_ms),
                }
            },
        )

    # -- end ---------------------------------------------------------------------------------------
    async def _apologise_and_hang_up(self) -> None:
        if self._hungup.is_set():
            return
        apology = self.profile.apology
        if apology:
            with contextlib.suppress(EslError, OSError):
                await self.player.break_all()
                duration = await self._play_file(apology, "apology")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(duration + 1.5):
                        await self._wait_played("apology")
        await self._hang_up()

    async def _wait_played(self, chunk_id: str) -> None:
        hangup = asyncio.create_task(self._hungup.wait())
        played = asyncio.create_task(self.playout.wait_stopped(chunk_id))
        try:
            await asyncio.wait({hangup, played}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (hangup, played):
                task.cancel()
            await asyncio.gather(hangup, played, return_exceptions=True)

    async def _hang_up(self) -> None:
        if self._hungup.is_set():
            return
        with contextlib.suppress(EslError, OSError):
            await self.esl.api(f"uuid_kill {self.uuid} NORMAL_CLEARING")

    async def _cleanup(self, rt_task: asyncio.Task, stream: ForkStream | None) -> None:
        self.state = "ended"
        self.fork_server.forget(self.uuid)
        if not rt_task.done():
            rt_task.cancel()
        with contextlib.suppress(BaseException):
            conn = await rt_task
            await conn.close()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close()
        if not self._hungup.is_set():
            cmd = (
                "uuid_audio_fork"
                if self.config.freeswitch.fork_module == "audio_fork"
                else "uuid_audio_stream"
            )
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.esl.api(f"{cmd} {self.uuid} stop"), 2.0)
        shutil.rmtree(self.chunk_dir, ignore_errors=True)
        s = self.summary
        s.duration_s = round(time.monotonic() - self.started, 3)
        s.first_audio_ms = [
            round(r.first_audio_latency_ms, 1)
            for r in self.playout.replies.values()
            if r.first_audio_latency_ms is not None
        ]
        s.uplink_bytes_in = self._uplink_stats.bytes_in
        s.uplink_bytes_24k = self._uplink_stats.bytes_out_24k
        s.downlink_bytes_out = self.playout.bytes_out
        s.files = self.playout.files_written
        log.info("call summary", extra={"fields": s.as_dict()})
        self.observer.call_ended(self, s)

    def _caller(self) -> str:
        return self.channel.get("Caller-Caller-ID-Number", "")


class _ObservedEsl(EslLink):
    """The call's ESL commands, reported to its observer (for traces)."""

    def __init__(self, inner: EslLink, call: Call) -> None:
        self._inner = inner
        self._call = call

    async def api(self, command: str) -> str:
        self._call.observer.esl_command(self._call, f"api {command}")
        return await self._inner.api(command)

    async def bgapi(self, command: str) -> str:
        self._call.observer.esl_command(self._call, f"bgapi {command}")
        return await self._inner.bgapi(command)

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:
        lines = "\n".join(f"{k}: {v}" for k, v in headers.items())
        self._call.observer.esl_command(self._call, f"sendmsg {uuid}\n{lines}")
        await self._inner.sendmsg(uuid, headers)
