"""One call: its lifetime, its coroutines, and barge-in.

A ``Call`` owns everything of one channel — the Realtime link (one session after another), the
fork stream, the chunk directory, and its tasks (uplink, Realtime dispatcher, playout, the side
jobs, running tools) — starts them in one place and ends them in one place, whatever ended the
call: the caller hanging up, the fork closing, the model going away, the bridge itself (a goodbye,
a limit, the ``end_call`` tool). It knows nothing of wire formats: ESL, fork and Realtime are reached
through their modules' small interfaces, and the rules of the conversation (response sequencing,
no-input watchdog, farewell, transcript, local speech gate) are pure helpers beside it.
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
from collections.abc import AsyncIterator, Coroutine, Mapping
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
from ..realtime.client import RealtimeConnection
from .chunker import ChunkPolicy
from .downlink import Playout, Truncation
from .gate import EchoReference, GateEvent, SpeechGate
from .observer import CallObserver
from .overrides import apply_overrides
from .player import Player, chunk_id_of
from .renewal import OPEN_ERRORS, RealtimeLink, SessionSwitched, open_session
from .responses import ResponseQueue
from .tools import ToolRunner
from .transcript import Transcript, format_setvars
from .uplink import UplinkStats, run_uplink
from .usage import UsageTotals, price_for
from .watchdog import Farewell, Watchdog

__all__ = ["Call", "CallSummary", "EslLink"]

log = logging.getLogger("fsbridge.call")

CallState = Literal["starting", "greeting", "listening", "speaking", "ended"]
# Realtime errors that are expected races, not faults (logged at debug).
BENIGN_ERRORS = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
    }
)
DTMF_KEYS = frozenset("0123456789*#ABCD")
DTMF_GROUP_S = 0.3  # keys pressed this close together go to the model as one message
FAREWELL_TIMEOUT_S = 30.0  # a goodbye that never comes must not keep the call up
LIMIT_GOODBYE = "The call has reached its time limit. Thank the caller and say a short goodbye."


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
    local_barge_ins: int = 0
    first_audio_ms: list[float] = field(default_factory=list)
    uplink_bytes_in: int = 0
    uplink_bytes_24k: int = 0
    downlink_bytes_24k: int = 0
    downlink_bytes_out: int = 0
    files: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None
    transcript: str | None = None
    transcript_turns: int = 0
    sessions: int = 1
    renewals: int = 0
    reconnects: int = 0
    prompts: int = 0
    digits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        self.channel = dict(channel or {})
        self.profile, self._overrides = apply_overrides(profile, self.channel)
        self.config = config
        self.esl = _ObservedEsl(esl, self)
        self.fork_server = fork_server
        self.http = http
        self.state: CallState = "starting"
        self.started = time.monotonic()
        self.summary = CallSummary(uuid, profile_name)
        self.observer = observer or CallObserver()
        self.model = self.profile.model or config.realtime.model
        self.digits = ""  # every key the caller pressed, for tools
        self.transcript = Transcript()
        self.usage = UsageTotals()
        self._price = price_for(config.prices, self.model)
        tdir = config.transcripts.dir
        self.transcript_path = Path(tdir) / f"{uuid}.jsonl" if tdir else None
        self._hungup = asyncio.Event()
        self._fork_failed: str | None = None
        self._stream: ForkStream | None = None
        self._link: RealtimeLink | None = None
        self._responses = ResponseQueue()
        self._farewell = Farewell()
        self._farewell_at: float | None = None
        self._watchdog = Watchdog(self.profile.watchdog)
        self._wake = asyncio.Event()  # the line changed: re-check the watchdog and the farewell
        self._end = asyncio.Event()
        self._end_reason = "completed"
        self._dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._vars_dirty = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # running tools, owned and awaited here
        self._caller_speaking = False  # between server VAD's speech_started and _stopped
        self._local_barged = False  # the gate broke the reply for the speech in progress
        self._item_bytes: dict[str, int] = {}  # assistant item -> 24 kHz bytes received
        self._response_bytes: dict[str, int] = {}
        self._last_item: str | None = None
        self._dropped: set[str] = set()  # responses whose audio must not play
        self._cancel_unrequested = False
        self._greeting_response: str | None = None
        self._limit_reached = False
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
        lb = self.profile.local_barge_in
        self._local_turns = self.profile.turn_detection.type == "none"
        self._echo = EchoReference(self.rate) if lb.enabled else None
        self._gate: SpeechGate | None = None
        if lb.enabled or self._local_turns:
            self._gate = SpeechGate(
                self.rate,
                threshold_db=lb.threshold_db,
                min_speech_ms=lb.min_speech_ms,
                end_silence_ms=lb.end_silence_ms,
                echo_correlation=lb.echo_correlation,
                echo=self._echo,
            )
        self.tools = ToolRunner(
            profile=self.profile,
            uuid=uuid,
            esl=self.esl,
            http=http,
            send=self._tool_send,
            end_call_after_reply=self._end_after_tool_reply,
            digits=lambda: self.digits,
            context=self.channel,
        )
        self._tool_defs = self.tools.definitions() or None

    @property
    def _rt(self) -> RealtimeLink | None:
        """The Realtime link if a session is live (None while there is none)."""
        link = self._link
        return link if link is not None and link.live else None

    @property
    def _response_active(self) -> str | None:
        return self._responses.active

    @_response_active.setter
    def _response_active(self, value: str | None) -> None:
        self._responses.active = value

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
                self._echo_started(cid)
                self._wake.set()
        elif name == "PLAYBACK_STOP":
            cid = chunk_id_of(ev.headers)
            if cid:
                pos = ev.variable("playback_last_offset_pos")
                self.playout.playback_stopped(
                    cid,
                    ev.headers.get("Playback-Status", "done"),
                    int(pos) if pos and pos.isdigit() else None,
                )
                if self._echo is not None:
                    self._echo.stop(time.monotonic())
                if not self.playout.busy:
                    self._set_state("listening")
                self._check_farewell()
                self._wake.set()
        elif name == "DTMF":
            self._on_dtmf(ev.headers.get("DTMF-Digit", ""))
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

    # -- what others may ask of a call -----------------------------------------------------------
    async def say(
        self, text: str, role: Literal["user", "system"] = "user", respond: bool = True
    ) -> None:
        """Add a text item to the conversation (and ask for a reply to it when ``respond``).

        The reply waits for the active response to finish, if one is running. Raises
        ``RuntimeError`` if the call has no live Realtime session.
        """
        link = self._rt
        if link is None or self.state == "ended":
            raise RuntimeError("the call has no live Realtime session")
        if role not in ("user", "system"):
            raise ValueError(f"role must be 'user' or 'system', not {role!r}")
        await link.send(rtp.text_item(role, text))
        self.transcript.note(role, text, self._t(), "text")
        if respond:
            await self._ask(None, "say")

    def _end_after_tool_reply(self) -> None:
        """``end_call``: hang up once the reply the tool's output asks for has been heard."""
        self._arm_farewell("end_call", "tool")
        if self._responses.active is not None and self._responses.active_tag == "tool":
            self._farewell.created(self._responses.active, "tool")
        self._wake.set()

    async def _tool_send(self, event: dict) -> None:
        if event.get("type") == "response.create":
            response = event.get("response") or {}
            await self._ask(response.get("instructions"), "tool")
        else:
            await self._send(event)

    # -- lifetime ---------------------------------------------------------------------------------
    async def run(self) -> CallSummary:
        """Run the call to its end; never raises (except cancellation of the service)."""
        call_uuid.set(self.uuid)
        self.observer.call_started(self)
        log.info(
            "call claimed",
            extra={"fields": {"profile": self.profile_name, "caller": self._caller()}},
        )
        for note in self._overrides:
            level = logging.INFO if note.applied else logging.WARNING
            verb = "applied" if note.applied else "ignored"
            log.log(level, "channel override %s %s: %s", note.variable, verb, note.detail)
        rt_task = asyncio.create_task(self._open_realtime(), name=f"rt-open-{self.uuid[:8]}")
        try:
            await self._start_fork_and_greeting()
            try:
                conn = await rt_task
            except OPEN_ERRORS as exc:
                self.summary.outcome = "realtime_failed"
                log.error("realtime session could not start: %s", exc)
                await self._play_and_hang_up(self.profile.apology, "apology")
                return self.summary
            rc = self.config.realtime
            window = self.config.audio.append_window_ms
            self._link = RealtimeLink(
                conn,
                opener=self._open_realtime,
                seed=self.transcript.seed_events,
                renew_after_s=rc.session_renew_s,
                backlog_events=max(1, 5000 // window),
                replay_events=max(1, 400 // window),
            )
            if self.state == "starting":
                self._set_state("listening")
            if self.profile.greeting_mode == "model":  # as soon as the session is ready
                await self._ask(self.profile.greeting_prompt, "greeting")
            reason = await self._converse()
            self.summary.outcome = self._end_reason if reason == "ended" else reason
            if reason in ("realtime_closed", "fork_failed"):
                await self._play_and_hang_up(self.profile.apology, "apology")
            elif reason == "max_duration":
                await self._play_and_hang_up(self.profile.goodbye, "goodbye")
            elif reason != "hangup":
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
            await self._cleanup(rt_task)
        return self.summary

    async def _converse(self) -> str:
        """Run the coroutines until the first of them (or the hangup) ends the call."""
        assert self._link is not None
        jobs: dict[str, Coroutine[Any, Any, Any]] = {
            "fork_closed": self._uplink(),
            "realtime_closed": self._dispatch_realtime(self._link),
            "playout_failed": self.playout.run(),
            "hangup": self._hungup.wait(),
            "max_duration": asyncio.sleep(self.profile.max_call_s),
            "ended": self._end.wait(),
            "error:watchdog": self._watch(),
            "error:dtmf": self._dtmf_loop(),
            "error:vars": self._vars_loop(),
            "error:renewal": self._link.run_renewal(self._at_boundary),
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
        name = tasks[first]
        if name == "fork_closed" and self._stream is None:
            return "fork_failed"
        return "error" if name.startswith("error:") else name

    # -- start ------------------------------------------------------------------------------------
    async def _open_realtime(self) -> RealtimeConnection:
        return await open_session(
            self.http,
            self.config.realtime,
            self.profile,
            model=self.model,
            tools=self._tool_defs,
            on_event=lambda direction, raw: self.observer.realtime_event(self, direction, raw),
        )

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

    # -- the caller's side ------------------------------------------------------------------------
    async def _uplink(self) -> None:
        stream = await self._accept_fork()
        if stream is None:
            return
        self._stream = stream
        self.observer.fork_audio(self, stream.metadata)
        self._wake.set()
        assert self._link is not None
        frames = stream.frames() if self._gate is None else self._gated(stream.frames())
        await run_uplink(
            frames,
            make_resampler(self.rate, 24000, self.config.audio.resampler),
            self._link.send_audio,
            window_ms=self.config.audio.append_window_ms,
            stats=self._uplink_stats,
        )

    async def _gated(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The fork's frames, unchanged, through the local speech gate on the way."""
        gate = self._gate
        assert gate is not None
        async for frame in frames:
            for event in gate.feed(frame, time.monotonic()):
                await self._on_gate(event)
            yield frame

    async def _on_gate(self, event: GateEvent) -> None:
        self._wake.set()
        if event.kind == "speech_start":
            self._watchdog.caller_spoke()
            lb = self.profile.local_barge_in
            if lb.enabled and self.playout.busy and not self._greeting_protected():
                self._local_barged = True
                self.summary.local_barge_ins += 1
                await self.barge_in(received=event.t)
        else:
            self._local_barged = False
            if self._local_turns:
                await self._commit_turn("end of speech")

    async def _commit_turn(self, why: str) -> None:
        """No server VAD: the bridge ends the caller's turn and asks for the reply."""
        if self._rt is None:
            return
        log.info("caller's turn committed (%s)", why)
        await self._send(rtp.input_audio_commit())
        await self._ask(None, "turn")

    def _on_dtmf(self, digit: str) -> None:
        digit = digit.strip().upper()
        if len(digit) != 1 or digit not in DTMF_KEYS:
            return
        self.digits = (self.digits + digit)[-256:]
        self.summary.digits += 1
        with contextlib.suppress(asyncio.QueueFull):
            self._dtmf.put_nowait(digit)

    async def _dtmf_loop(self) -> None:
        """Keys to the model: a burst of keys is one text item; the commit key ends a turn."""
        cfg = self.profile.dtmf
        group: list[str] = []
        while True:
            try:
                async with asyncio.timeout(DTMF_GROUP_S if group else None):
                    digit = await self._dtmf.get()
            except TimeoutError:
                await self._forward_keys(group, cfg.respond)
                group = []
                continue
            if self._local_turns and cfg.commit_key and digit == cfg.commit_key:
                await self._forward_keys(group, respond=False)
                group = []
                if self._gate is not None:
                    self._gate.reset()
                await self._commit_turn("DTMF")
            elif cfg.forward:
                group.append(digit)

    async def _forward_keys(self, keys: list[str], respond: bool) -> None:
        if not keys or self._rt is None:
            return
        text = f"The caller pressed {' '.join(keys)}"
        await self._send(rtp.text_item("user", text))
        self.transcript.note("user", text, self._t(), "dtmf")
        if respond:
            await self._ask(None, "dtmf")

    # -- the Realtime side -----------------------------------------------------------------------
    async def _send(self, event: dict) -> None:
        if self._link is not None:
            await self._link.send(event)

    async def _ask(self, instructions: str | None, tag: str) -> None:
        """Ask for a response, now or once the active one is done (see ResponseQueue)."""
        event = self._responses.request(instructions, tag, time.monotonic())
        if event is not None:
            await self._send(event)
        self._wake.set()

    async def _dispatch_realtime(self, link: RealtimeLink) -> None:
        async for ev in link.events():
            await self._on_realtime(ev)
        log.info("realtime session closed (code %s)", link.conn.close_code)

    async def _on_realtime(self, ev: rtp.ServerEvent | SessionSwitched) -> None:
        if isinstance(ev, rtp.AudioDelta):
            if ev.response_id in self._dropped:
                return
            self.summary.downlink_bytes_24k += len(ev.audio)
            if ev.item_id not in self._item_bytes:
                self.transcript.assistant_audio(ev.item_id, self._t())
            self._item_bytes[ev.item_id] = self._item_bytes.get(ev.item_id, 0) + len(ev.audio)
            rb = self._response_bytes
            rb[ev.response_id] = rb.get(ev.response_id, 0) + len(ev.audio)
            self._last_item = ev.item_id
            self.playout.audio(ev.response_id, ev.item_id, ev.audio)
        elif isinstance(ev, rtp.SpeechStarted):
            self._caller_speaking = True
            self._watchdog.caller_spoke()
            self._wake.set()
            if self._local_barged and self._gate is not None and self._gate.in_speech:
                return  # the local gate already broke the reply for this speech
            if not self._greeting_protected():
                await self.barge_in(received=time.monotonic())
        elif isinstance(ev, rtp.SpeechStopped):
            self._caller_speaking = False
            self._wake.set()
        elif isinstance(ev, rtp.InputCommitted):
            self.transcript.user_audio(ev.item_id, self._t())
        elif isinstance(ev, rtp.InputTranscript):
            self.transcript.user_text(ev.item_id, ev.transcript, self._t())
        elif isinstance(ev, rtp.AudioDone):
            self.playout.audio_done(ev.item_id)
        elif isinstance(ev, rtp.TranscriptDone):
            self.transcript.assistant_text(ev.item_id, ev.transcript, self._t())
        elif isinstance(ev, rtp.ItemTruncated):
            generated = self._item_bytes.get(ev.item_id, 0) / 48  # 24 kHz int16: 48 bytes/ms
            self.transcript.truncated(ev.item_id, ev.audio_end_ms, generated)
        elif isinstance(ev, rtp.ResponseCreated):
            await self._response_created(ev)
        elif isinstance(ev, rtp.ResponseDone):
            await self._response_done(ev)
        elif isinstance(ev, rtp.FunctionCall):
            self._spawn(self.tools.handle(ev.call_id, ev.name, ev.arguments), f"tool-{ev.name}")
        elif isinstance(ev, rtp.TimeoutTriggered):
            await self._idle_timeout()
        elif isinstance(ev, rtp.Error):
            await self._realtime_error(ev)
        elif isinstance(ev, SessionSwitched):
            await self._session_switched(ev)

    async def _response_created(self, ev: rtp.ResponseCreated) -> None:
        tag = self._responses.created(ev.response_id, ev.metadata)
        self.summary.turns += 1
        self._farewell.created(ev.response_id, tag)
        if tag == "greeting":
            self._greeting_response = ev.response_id
        if tag is None and self._cancel_unrequested:
            # server VAD's idle-timeout reply after our last prompt: the goodbye replaces it
            self._cancel_unrequested = False
            self._dropped.add(ev.response_id)
            await self._send(rtp.response_cancel())
        limit = self.profile.max_turns
        if limit is not None and tag != "goodbye" and self.summary.turns >= limit:
            self._limit_reached = True
        self._wake.set()

    async def _response_done(self, ev: rtp.ResponseDone) -> None:
        now = time.monotonic()
        nxt = self._responses.done(ev.response_id, now)
        reply = self.playout.replies.get(ev.response_id)
        if reply is not None:
            self.observer.reply_done(self, reply)
        if ev.usage:
            self.observer.usage(self, ev.usage)
            self.usage.add(ev.usage)
        for k, v in (ev.usage or {}).items():
            if isinstance(v, int):
                self.summary.usage[k] = self.summary.usage.get(k, 0) + v
        if ev.status == "failed":
            log.warning("response failed: %s", ev.error)
        heard = ev.response_id not in self._dropped and self._response_bytes.get(ev.response_id)
        self._farewell.response_done(ev.response_id, bool(heard))
        self._vars_dirty.set()
        self._check_farewell()
        self._wake.set()
        if nxt is not None:
            await self._send(nxt)

    async def _realtime_error(self, ev: rtp.Error) -> None:
        self.observer.realtime_error(self, ev.code)
        nxt = self._responses.error(ev.code, ev.event_id, time.monotonic())
        if ev.code in BENIGN_ERRORS:
            log.debug("realtime: %s", ev.code)
        elif ev.code == "session_expired":
            log.info("realtime: %s", ev.message)
        else:
            log.warning("realtime error %s: %s", ev.code, ev.message)
        if nxt is not None:
            await self._send(nxt)

    async def _session_switched(self, ev: SessionSwitched) -> None:
        self.summary.sessions = ev.index + 1
        if ev.reason == "renewed":
            self.summary.renewals += 1
        else:
            self.summary.reconnects += 1
        if self._last_item is not None:
            self.playout.audio_done(self._last_item)  # a reply cut by a drop: play what came
        self._caller_speaking = False
        if self._farewell.armed and self._farewell.response_id and not self._farewell.done:
            self._farewell.response_done(self._farewell.response_id, True)  # lost: end anyway
        nxt = self._responses.reset(time.monotonic())
        self._check_farewell()
        self._wake.set()
        if nxt is not None:
            await self._send(nxt)

    async def _idle_timeout(self) -> None:
        """Server VAD's idle_timeout_ms fired: it counts as one of the watchdog's prompts."""
        td = self.profile.turn_detection
        server_replies = bool(getattr(td, "create_response", True))
        action = self._watchdog.server_prompted()
        if action == "prompt":
            self.summary.prompts += 1
            log.info("caller silent (server idle timeout): prompt %d", self._watchdog.prompts)
            if not server_replies:
                await self._ask(self.profile.watchdog.prompt, "prompt")
        else:
            self._cancel_unrequested = server_replies
            await self._goodbye("no_input", self.profile.watchdog.goodbye_prompt)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"{name}-{self.uuid[:8]}")
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %r", name, t.exception())

        task.add_done_callback(finished)

    # -- silence, goodbyes and limits -------------------------------------------------------------
    def _idle(self) -> bool:
        """Nobody is talking and nothing is on its way: the caller's silence counts."""
        return (
            self._stream is not None
            and not self.playout.busy
            and not self._responses.busy
            and not self._caller_speaking
            and not (self._gate is not None and self._gate.in_speech)
            and not self._tasks
            and not self._farewell.armed
        )

    def _at_boundary(self) -> bool:
        """Between turns: a Realtime session can be replaced without anyone noticing."""
        return (
            not self.playout.busy
            and not self._responses.busy
            and not self._caller_speaking
            and not (self._gate is not None and self._gate.in_speech)
            and not self._tasks
        )

    async def _watch(self) -> None:
        """The no-input watchdog, the turn limit and the farewell deadline, woken on changes."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            self._check_farewell(now)
            nxt = self._responses.expire(now)
            if nxt is not None:
                await self._send(nxt)
            if self._limit_reached and not self._farewell.armed and self._at_boundary():
                log.info("max_turns reached: saying goodbye")
                await self._goodbye("max_turns", LIMIT_GOODBYE)
            action, wait = self._watchdog.poll(now, self._idle())
            if action == "prompt":
                self.summary.prompts += 1
                log.info("caller silent: prompt %d", self._watchdog.prompts)
                await self._ask(self.profile.watchdog.prompt, "prompt")
            elif action == "goodbye":
                log.info("caller silent: saying goodbye")
                await self._goodbye("no_input", self.profile.watchdog.goodbye_prompt)
            if self._farewell_at is not None or self._responses.waiting:
                wait = 1.0 if wait is None else min(wait, 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _arm_farewell(self, reason: str, tag: str | None) -> None:
        if not self._farewell.armed:
            self._farewell.arm(reason, tag)
            self._farewell_at = time.monotonic()

    async def _goodbye(self, reason: str, prompt: str) -> None:
        self._arm_farewell(reason, "goodbye")
        await self._ask(prompt, "goodbye")

    def _check_farewell(self, now: float | None = None) -> None:
        if self._end.is_set() or not self._farewell.armed:
            return
        late = self._farewell_at is not None and (
            (now or time.monotonic()) - self._farewell_at > FAREWELL_TIMEOUT_S
        )
        if self._farewell.due(self.playout.busy) or late:
            self._end_reason = self._farewell.reason or "completed"
            log.info("ending the call (%s)", self._end_reason)
            self._end.set()

    def _greeting_protected(self) -> bool:
        """A model-spoken greeting that the profile says the caller may not talk over."""
        rid = self._greeting_response
        if self.profile.greeting_interruptible or rid is None:
            return False
        if self._responses.active == rid:
            return True
        return any(c.response_id == rid and c.pending for c in self.playout.ledger)

    # -- the record -------------------------------------------------------------------------------
    def _t(self) -> float:
        return time.monotonic() - self.started

    def _echo_started(self, chunk_id: str) -> None:
        """Remember what the caller starts hearing now, for the gate's echo check."""
        if self._echo is None:
            return
        chunk = self.playout.ledger.get(chunk_id)
        if chunk is None:
            return
        try:
            samples, rate = read_wav(chunk.path)  # one small file per chunk start
        except (WavError, OSError):
            return
        if rate == self.rate:
            self._echo.play(samples, time.monotonic())

    def cdr_variables(self) -> dict[str, str]:
        """What the call leaves in FreeSWITCH's CDR (set with ``uuid_setvar_multi``)."""
        out: dict[str, str] = {}
        if self.transcript_path is not None:
            out["fsbridge_transcript"] = str(self.transcript_path)
        out["fsbridge_turns"] = str(self.summary.turns)
        out["fsbridge_tokens_in"] = str(self.usage.input_tokens)
        out["fsbridge_tokens_out"] = str(self.usage.output_tokens)
        if self._price is not None:
            out["fsbridge_cost_usd"] = f"{self.usage.cost_usd(self._price):.6f}"
        return out

    async def _vars_loop(self) -> None:
        """After every turn, while the channel is up (it is gone after the hangup)."""
        while True:
            await self._vars_dirty.wait()
            self._vars_dirty.clear()
            if self._hungup.is_set():
                continue
            command = f"uuid_setvar_multi {self.uuid} {format_setvars(self.cdr_variables())}"
            try:
                await self.esl.api(command)
            except (EslError, OSError) as exc:
                log.warning("could not set the CDR variables: %s", exc)

    async def barge_in(self, received: float | None = None) -> None:
        """The caller talks over what we play: stop it now, forget what they did not hear.

        The playout is cancelled synchronously first (nothing more of the reply can be queued,
        its unplayed files are deleted), so ``uuid_break all`` is the first thing on the wire.
        The truncate follows from the playout once FreeSWITCH has said how much of the broken
        chunk it wrote; ``response.cancel`` only if the session does not cancel by itself.
        """
        greeting = self.playout.ledger.get("greeting")
        if greeting is not None and greeting.pending and not self.profile.greeting_interruptible:
            return
        active = self._response_active
        if self.playout.busy:
            self.summary.barge_ins += 1
            self.playout.cancel(active)
            await self.player.break_all()
            if received is not None:
                self.observer.barge_in(self, (time.monotonic() - received) * 1000)
            log.info("barge-in")
        elif active is not None:
            self.playout.cancel(active)  # nothing of it queued yet: it will never play
        else:
            return
        if active is not None and not self._server_cancels() and self._rt is not None:
            await self._rt.send(rtp.response_cancel())

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
    async def _play_and_hang_up(self, path: str | None, chunk_id: str) -> None:
        """Play a prompt file (apology, goodbye) to its end, then hang up."""
        if self._hungup.is_set():
            return
        if path:
            with contextlib.suppress(EslError, OSError):
                await self.player.break_all()
                duration = await self._play_file(path, chunk_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(duration + 1.5):
                        await self._wait_played(chunk_id)
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

    async def _cleanup(self, rt_task: asyncio.Task) -> None:
        self.state = "ended"
        self.fork_server.forget(self.uuid)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not rt_task.done():
            rt_task.cancel()
        with contextlib.suppress(BaseException):
            conn = await rt_task
            await conn.close()
        if self._link is not None:
            await self._link.close()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.close()
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
        if self.transcript_path is not None:
            try:
                await asyncio.to_thread(self.transcript.write, self.transcript_path)
                s.transcript = str(self.transcript_path)
            except OSError as exc:
                log.error("cannot write the transcript %s: %s", self.transcript_path, exc)
        s.transcript_turns = self.transcript.count()
        s.tokens_in, s.tokens_out = self.usage.input_tokens, self.usage.output_tokens
        if self._price is not None:
            s.cost_usd = round(self.usage.cost_usd(self._price), 6)
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
