"""The conversation rules of a call, on the Realtime side (a part of ``Call``).

Server events come in; the call's state and the Realtime requests go out: audio to the playout,
turns to the transcript, usage to the totals, ``response.create`` through the response queue (the
model greeting, DTMF, ``say``, tool results, the watchdog's prompts and goodbyes), the farewell that
hangs up once a goodbye has been heard, the CDR variables after every turn. The rules themselves are
pure helpers (``responses``, ``watchdog``, ``transcript``, ``usage``); this mixin is their glue, and
is only ever mixed into :class:`fsbridge.call.call.Call`, whose attributes it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..esl.protocol import EslError
from ..realtime import protocol as rtp
from .renewal import RealtimeLink, SessionSwitched
from .transcript import format_setvars

if TYPE_CHECKING:
    from ..config import Config, Price, Profile
    from ..fork.server import ForkStream
    from .downlink import Playout
    from .gate import SpeechGate
    from .observer import CallObserver
    from .responses import ResponseQueue
    from .summary import CallSummary, EslLink
    from .tools import ToolRunner
    from .transcript import Transcript
    from .usage import TranscriptionTotals, UsageTotals
    from .watchdog import Farewell, Watchdog

__all__ = ["BENIGN_ERRORS", "ConversationMixin"]

log = logging.getLogger("fsbridge.call")

# Realtime errors that are expected races, not faults (logged at debug).
BENIGN_ERRORS = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
    }
)
FAREWELL_TIMEOUT_S = 30.0  # a goodbye that never comes must not keep the call up


class ConversationMixin:
    # provided by Call
    uuid: str
    profile: Profile
    config: Config
    esl: EslLink
    state: str
    started: float
    summary: CallSummary
    observer: CallObserver
    playout: Playout
    tools: ToolRunner
    transcript: Transcript
    transcript_path: Path | None
    usage: UsageTotals
    _price: Price | None
    transcription_usage: TranscriptionTotals
    _asr_price: Price | None
    _link: RealtimeLink | None
    _responses: ResponseQueue
    _farewell: Farewell
    _farewell_at: float | None
    _watchdog: Watchdog
    _wake: asyncio.Event
    _end: asyncio.Event
    _end_reason: str
    _hungup: asyncio.Event
    _vars_dirty: asyncio.Event
    _tasks: set[asyncio.Task[None]]
    _stream: ForkStream | None
    _gate: SpeechGate | None
    _caller_speaking: bool
    _local_barged: bool
    _item_bytes: dict[str, int]
    _response_bytes: dict[str, int]
    _last_item: str | None
    _dropped: set[str]
    _cancel_unrequested: bool
    _greeting_response: str | None
    _limit_reached: bool

    if TYPE_CHECKING:

        @property
        def _rt(self) -> RealtimeLink | None: ...
        async def barge_in(self, received: float | None = None) -> None: ...

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
            if ev.usage:
                self.transcription_usage.add(ev.usage)
                self.observer.transcription_usage(self, ev.usage)
                self._vars_dirty.set()
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
                await self._goodbye("max_turns", self.profile.max_turns_goodbye_prompt)
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

    def cdr_variables(self) -> dict[str, str]:
        """What the call leaves in FreeSWITCH's CDR (set with ``uuid_setvar_multi``)."""
        out: dict[str, str] = {}
        if self.transcript_path is not None:
            out["fsbridge_transcript"] = str(self.transcript_path)
        out["fsbridge_turns"] = str(self.summary.turns)
        out["fsbridge_tokens_in"] = str(self.usage.input_tokens)
        out["fsbridge_tokens_out"] = str(self.usage.output_tokens)
        total, asr = self.costs_usd()
        if total is not None:
            out["fsbridge_cost_usd"] = f"{total:.6f}"
        if asr is not None:
            out["fsbridge_transcription_cost_usd"] = f"{asr:.6f}"
        return out

    def costs_usd(self) -> tuple[float | None, float | None]:
        """(whole call, of which input transcription) in USD; None where there is no price."""
        asr = None
        if self._asr_price is not None and self.transcription_usage.items:
            asr = self.transcription_usage.cost_usd(self._asr_price)
        if self._price is None:
            return None, asr
        return self.usage.cost_usd(self._price) + (asr or 0.0), asr

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
