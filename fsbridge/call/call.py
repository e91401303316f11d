"""One call: its lifetime, its coroutines, and barge-in.

A ``Call`` owns everything of one channel — the Realtime link (one session after another), the
fork stream, the chunk directory, and its tasks (uplink, Realtime dispatcher, playout, the side
jobs, running tools) — starts them in one place and ends them in one place, whatever ended the
call: the caller hanging up, the fork closing, the model going away, the bridge itself (a goodbye,
a limit, the ``end_call`` tool). It knows nothing of wire formats: ESL, fork and Realtime are reached
through their modules' small interfaces. The conversation rules live beside it: the Realtime side
in ``conversation`` (mixed in), the caller's side in ``caller`` (mixed in), and the pure rules in
``responses``, ``watchdog``, ``transcript``, ``usage``, ``gate`` and ``renewal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp

from ..aio import run_to_end
from ..audio.resample import make_resampler
from ..audio.wav import WavError, read_wav
from ..config import Config, Profile
from ..esl.protocol import EslError, EslEvent
from ..fork.server import ForkServer, ForkStream
from ..logs import call_uuid
from ..realtime import protocol as rtp
from ..realtime.client import RealtimeConnection
from .caller import CallerMixin
from .chunker import ChunkPolicy
from .conversation import BENIGN_ERRORS, ConversationMixin
from .downlink import Playout, Truncation
from .gate import EchoReference, SpeechGate
from .observer import CallObserver
from .overrides import apply_overrides
from .player import Player, chunk_id_of
from .renewal import OPEN_ERRORS, RealtimeLink, open_session
from .responses import ResponseQueue
from .summary import CallSummary, EslLink, ObservedEsl
from .tools import ToolRunner
from .transcript import Transcript
from .uplink import UplinkStats
from .usage import TranscriptionTotals, UsageTotals, price_for
from .watchdog import Farewell, Watchdog

__all__ = ["BENIGN_ERRORS", "Call", "CallSummary", "EslLink"]

log = logging.getLogger("fsbridge.call")

CallState = Literal["starting", "greeting", "listening", "speaking", "transferring", "ended"]
FORK_CLOSE_GRACE_S = 0.5  # how long a closed fork waits for the hangup event that explains it
TOOL_SETTLE_S = 1.0  # how long a transferred call lets a running tool deliver its result


class Call(ConversationMixin, CallerMixin):
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
        self.esl = ObservedEsl(esl, self)
        self.fork_server = fork_server
        self.http = http
        self.state: CallState = "starting"
        self.started = time.monotonic()
        self.summary = CallSummary(uuid, profile_name)
        self.ending = False  # the outcome is decided; what is left is hanging up and cleaning up
        self.observer = observer or CallObserver()
        self.model = self.profile.model or config.realtime.model
        self.digits = ""  # every key the caller pressed, for tools
        self.transcript = Transcript()
        self.usage = UsageTotals()
        self._price = price_for(config.prices, self.model)
        self.transcription_usage = TranscriptionTotals()
        asr = self.profile.transcription
        self._asr_price = price_for(config.prices, asr.model) if asr is not None else None
        tdir = config.transcripts.dir
        self.transcript_path = Path(tdir) / f"{uuid}.jsonl" if tdir else None
        self._hungup = asyncio.Event()
        self._left_park = asyncio.Event()  # transferred away (by a tool, an operator, the dialplan)
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
            policy=ChunkPolicy(
                pb.first_chunk_ms, pb.min_chunk_ms, pb.max_chunk_ms, pb.queue_ahead, pb.cut_ahead_ms
            ),
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
        elif name == "CHANNEL_UNPARK" and not self._hungup.is_set():
            # The channel left park without hanging up: someone transferred it. Let it go.
            self._set_state("transferring")
            self._left_park.set()
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
                self.summary.outcome, self.ending = "realtime_failed", True
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
                reconnect_attempts=rc.reconnect_attempts,
                reconnect_backoff_s=rc.reconnect_backoff_s,
                backlog_events=max(1, 5000 // window),
                replay_events=max(1, 400 // window),
            )
            if self.state == "starting":
                self._set_state("listening")
            if self.profile.greeting_mode == "model":  # as soon as the session is ready
                await self._ask(self.profile.greeting_prompt, "greeting")
            reason = await self._converse()
            self.summary.outcome = self._end_reason if reason == "ended" else reason
            self.ending = True
            if reason in ("realtime_closed", "fork_failed"):
                await self._play_and_hang_up(self.profile.apology, "apology")
            elif reason == "max_duration":
                await self._play_and_hang_up(self.profile.goodbye, "goodbye")
            elif reason not in ("hangup", "transferred"):
                await self._hang_up()
        except asyncio.CancelledError:
            if not self.ending:  # a call already ending keeps the reason it ended for
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
            # The service cancels a call that outlives the drain, maybe while it cleans up; an
            # interrupted cleanup would lose the summary, leave the call counted as active and
            # its trace open. Every step of it is bounded, so it runs to its end.
            await run_to_end(self._cleanup(rt_task), f"cleanup-{self.uuid[:8]}")
        return self.summary

    async def _converse(self) -> str:
        """Run the coroutines until the first of them (or the hangup) ends the call."""
        assert self._link is not None
        jobs: dict[str, Coroutine[Any, Any, Any]] = {
            "fork_closed": self._uplink(),
            "realtime_closed": self._dispatch_realtime(self._link),
            "playout_failed": self.playout.run(),
            "hangup": self._hungup.wait(),
            "transferred": self._left_park.wait(),
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
        name = tasks[first]
        if name == "fork_closed" and self._stream is not None:
            # FreeSWITCH closes the fork when the caller hangs up; the ESL event may come second
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FORK_CLOSE_GRACE_S):
                    await self._hungup.wait()
        if self._hungup.is_set():
            return "hangup"
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
        # The transcript keeps what the caller heard, known here; the server's
        # conversation.item.truncated confirms it later, unless the call ends first.
        self.transcript.truncated(
            t.item_id, t.audio_end_ms, self._item_bytes.get(t.item_id, 0) / 48
        )
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
        if self.summary.outcome == "transferred" and self._tasks:
            # The channel can leave park before the uuid_transfer reply comes back (FreeSWITCH
            # sends the two independently): let the tool that made the transfer answer it, so
            # the transcript and the trace end with its result.
            await asyncio.wait(set(self._tasks), timeout=TOOL_SETTLE_S)
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
                async with asyncio.timeout(2.0):
                    await self.esl.api(f"{cmd} {self.uuid} stop")
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
        if self.transcription_usage.items:
            s.transcription = self.transcription_usage.as_dict()
        total, asr = self.costs_usd()
        s.cost_usd = round(total, 6) if total is not None else None
        s.transcription_cost_usd = round(asr, 6) if asr is not None else None
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
